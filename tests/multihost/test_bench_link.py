"""The slow-network benchmark mode on the namespace lab (already up: only shaped, then not)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.helpers.jobs import REPO
from tests.helpers.namespace_lab import NamespaceHosts

pytestmark = pytest.mark.multihost
pytest.importorskip("horovod.torch")


def test_bench_allreduce_over_a_shaped_link(namespace_hosts: NamespaceHosts) -> None:
    done = subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), "-m", "hvdtrain", "bench", "allreduce",
         "--shaped-link", "200mbit", "--sizes", "1M", "--repeats", "2", "--compressions",
         "none", "--json"], capture_output=True, text=True, timeout=240, cwd=REPO,
        stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["link"] == "2 namespace hosts, tc-shaped to 200mbit"
    (row,) = result["rows"]
    assert row["hvdtrain"]["algbw_gb_s"] < 0.025 * 1.5  # 200 Mbit/s = 0.025 GB/s: it is shaped
    qdiscs = subprocess.run(["tc", "qdisc", "show", "dev", "hvdv1"], capture_output=True,
                            text=True, timeout=30).stdout
    assert "tbf" not in qdiscs  # unshaped again; the session's lab is still up
    assert namespace_hosts.ssh(namespace_hosts.hosts[0], "hostname").returncode == 0


def test_bench_train_over_a_shaped_link(namespace_hosts: NamespaceHosts) -> None:
    done = subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), "-m", "hvdtrain", "bench", "train",
         "--shaped-link", "100mbit", "--hidden", "256", "--batch-size", "16", "--steps", "10",
         "--rounds", "1", "--launches", "1", "--json"], capture_output=True, text=True,
        timeout=300, cwd=REPO, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["2"]["link"] == "2 namespace hosts, tc-shaped to 100mbit"
    assert sorted(result["2"]["contenders"]) == ["ddp", "horovod", "hvdtrain"]
    assert sorted(result["2"]["contenders"]["hvdtrain"]["ratios"]) == ["ddp", "horovod"]
    # 128→256→256→1 is 99,073 fp32 gradients = 396,292 bytes each rank sends a step (2-rank
    # ring: half in the reduce-scatter, half in the allgather). tc's token bucket lets its
    # burst (512 kB, netns_hosts.sh) through at once, the rest at 100 Mbit/s = 12.5 MB/s: a
    # window of 10 steps takes >= (10 × 396,292 − 524,288) / 12.5e6 s = 0.275 s, so no
    # contender can exceed 2 × 16 × 10 / 0.275 ≈ 1,160 samples/s (unshaped: over 10,000)
    steps, step_bytes, burst, rate = 10, 396_292, 512 * 1024, 12.5e6
    ceiling = 2 * 16 * steps / ((steps * step_bytes - burst) / rate)
    for contender in result["2"]["contenders"].values():
        assert 0 < contender["samples_per_second"] < ceiling * 1.1
