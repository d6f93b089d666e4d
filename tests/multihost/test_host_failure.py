"""A host's link goes down mid-epoch: ``--max-restarts`` stops the hung job, probes the hosts
and restarts from the newest step checkpoint — on the same hosts when the host answers again,
else (``--restart-on-fewer-hosts``) on the hosts that answer, at a smaller world size.

The run directory is on the filesystem every host shares (unlike test_runs.py), so the
surviving host finds the checkpoint. The link is the root side of the host's veth pair
(``hvdvK``), so the host's sshd is unreachable exactly as on a dead network port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.jobs import (
    PYTHON,
    REPO,
    finish_output,
    lab_env,
    read_summary,
    spawn,
    wait_until,
)
from tests.helpers.namespace_lab import NamespaceHosts
from tests.helpers.samples import assert_exactly_once

pytestmark = pytest.mark.multihost
pytest.importorskip("horovod.torch")

JOB_TIMEOUT = 400.0


def _link(host: str, state: str) -> None:
    veth = "hvdv" + host.removeprefix("hvdh")
    subprocess.run(["ip", "link", "set", "dev", veth, state], check=True, timeout=30)


@pytest.fixture
def link_restored(namespace_hosts: NamespaceHosts) -> Iterator[None]:
    """Whatever a test did to the links, they are up again afterwards, and nothing of its
    runs is left on the hosts."""
    yield
    for host in namespace_hosts.hosts:
        _link(host, "up")
    # ranks and Open MPI daemons stranded behind the dead link: the processes in the hosts'
    # network namespaces (not the sshd listener). Namespaces share this machine's PID space,
    # so a pkill by name on a host would reach every hvdtrain process here.
    for procs in namespace_hosts.processes().values():
        for line in procs:
            try:
                os.kill(int(line.split()[0]), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


def _start(lab: NamespaceHosts, tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("".join(f"{host} slots=1\n" for host in lab.hosts))
    argv = [PYTHON, "-m", "hvdtrain", "train", "--hostfile", str(hostfile),
            "--run-dir", str(tmp_path / "run"), "--data", "digits", "--epochs", "2",
            "--batch-size", "32", "--step-delay", "0.15", "--checkpoint-every-steps", "3",
            "--record-samples", "--max-restarts", "1", "--idle-timeout", "20",
            "--start-timeout", "90", *extra]
    return spawn(argv, lab_env(), REPO, stdin=subprocess.DEVNULL)


def _when_training_epoch_2(run_dir: Path, proc: subprocess.Popen[str]) -> None:
    wait_until(lambda: bool(list((run_dir / "checkpoints").glob("epoch-0001-sample-*.ckpt"))),
               proc, 300, "never reached epoch 2", interval=0.1)


def _check_run(run_dir: Path) -> dict[str, Any]:
    summary = read_summary(run_dir)
    assert summary["epochs_run"] == 2 and summary["parameters_identical"]
    assert summary["val_accuracy"] >= 0.85
    assert_exactly_once(run_dir, 2)  # the interrupted epoch too
    return summary


def test_link_down_then_fewer_hosts(namespace_hosts: NamespaceHosts, tmp_path: Path,
                                    link_restored: None) -> None:
    lab = namespace_hosts
    proc = _start(lab, tmp_path, "--restart-on-fewer-hosts", "--restart-wait", "5")
    _when_training_epoch_2(tmp_path / "run", proc)
    _link(lab.hosts[1], "down")  # and it stays down
    code, output = finish_output(proc, JOB_TIMEOUT)
    assert code == 0, output[-4000:]
    summary = _check_run(tmp_path / "run")
    [restart] = summary["restarts"]
    assert restart["unhealthy_hosts"] == [lab.hosts[1]]
    assert (restart["old_world_size"], restart["new_world_size"]) == (2, 1)
    [resume] = summary["resumes"]
    assert (resume["from_world_size"], resume["to_world_size"]) == (2, 1)
    assert resume["samples_into_epoch"] > 0  # from the step checkpoint, mid-epoch
    assert "restart 1 of 1: no rank wrote any output for 20 s" in output
    assert [r["host"] for r in summary["ranks"]] == [lab.hosts[0]]


def test_link_down_and_back_restarts_on_the_same_hosts(namespace_hosts: NamespaceHosts,
                                                       tmp_path: Path,
                                                       link_restored: None) -> None:
    lab = namespace_hosts
    proc = _start(lab, tmp_path, "--restart-wait", "60")
    _when_training_epoch_2(tmp_path / "run", proc)
    _link(lab.hosts[1], "down")
    # back before the restart gives up on it: the hang is noticed after 20 s of silence
    timer = threading.Timer(35, _link, args=(lab.hosts[1], "up"))
    timer.start()
    try:
        code, output = finish_output(proc, JOB_TIMEOUT)
    finally:
        timer.cancel()
    assert code == 0, output[-4000:]
    summary = _check_run(tmp_path / "run")
    [restart] = summary["restarts"]
    assert (restart["old_world_size"], restart["new_world_size"]) == (2, 2)
    assert sorted(r["host"] for r in summary["ranks"]) == sorted(lab.hosts)
