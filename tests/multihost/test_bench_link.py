"""The slow-network benchmark mode on the namespace lab (already up: only shaped, then not)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.multihost.conftest import REPO, NamespaceHosts

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
