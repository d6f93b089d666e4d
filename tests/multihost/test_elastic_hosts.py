"""Horovod elastic across real (namespace) hosts: ``hvdtrain train --elastic`` on hvdh1 and
hvdh2, whose worker on hvdh2 is killed mid-epoch: the job goes on with hvdh1 alone.

The run directory is on the filesystem the hosts share here (only the private directory is
per host), so the test reads the ranks' records and the summary directly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.jobs import PYTHON, REPO, finish, lab_env, read_summary, spawn, wait_until
from tests.helpers.namespace_lab import NamespaceHosts
from tests.helpers.samples import assert_exactly_once

pytestmark = pytest.mark.multihost
pytest.importorskip("horovod.torch")


def test_an_elastic_job_survives_a_killed_worker_on_another_host(
        namespace_hosts: NamespaceHosts, tmp_path: Path) -> None:
    lab = namespace_hosts
    first, second = lab.hosts
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text(f"{first} slots=1\n{second} slots=1\n")
    run_dir = tmp_path / "run"
    proc = spawn(
        [PYTHON, "-m", "hvdtrain", "train", "--elastic", "-np", "2", "--min-np", "1",
         "--max-np", "2", "--hostfile", str(hostfile), "--run-dir", str(run_dir),
         "--data", "digits", "--batch-size", "16", "--epochs", "3", "--step-delay", "0.2",
         "--commit-every-steps", "5", "--record-samples", "--elastic-timeout", "60",
         "--start-timeout", "120"],
        lab_env(), REPO, stdin=subprocess.DEVNULL)
    wait_until(lambda: bool(list((run_dir / "checkpoints").glob("epoch-*.ckpt"))), proc, 300,
               "no checkpoint", interval=0.5)
    time.sleep(2.0)
    starts = [json.loads(p.read_text()) for p in (run_dir / "ranks").glob("*.start.json")]
    [victim] = [s for s in starts if s["host"] == second]
    os.kill(victim["child_pid"], signal.SIGKILL)  # pids are global: only the net differs
    done = finish(proc, 420)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "hosts changed (a rank failed): 2 -> 1 ranks" in done.stdout + done.stderr
    summary = read_summary(run_dir)
    assert summary["world_size"] == 1 and summary["epochs_run"] == 3
    assert [r["host"] for r in summary["ranks"]] == [first]
    assert summary["val_accuracy"] >= 0.9
    assert_exactly_once(run_dir, 3)
