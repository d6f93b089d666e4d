"""Driving a user's elastic script (``tests/fixtures/elastic_user_script.py``) under
``hvdtrain launch --elastic`` through a grow and a loss, for tests/faults and tests/multihost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.jobs import REPO, finish, wait_until

SCRIPT = REPO / "tests" / "fixtures" / "elastic_user_script.py"
JOB_TIMEOUT = 240.0
# A joining worker must reach hvd.init() within Gloo's timeout (30 s by default) of the others'
# reset; a TensorFlow worker took longer on this shared 2-core machine under load
ENV = {"HOROVOD_GLOO_TIMEOUT_SECONDS": "90"}


def progress(out: Path) -> dict[str, Any]:
    try:
        found: dict[str, Any] = json.loads((out / "progress.json").read_text())
        return found
    except (OSError, ValueError):
        return {}


def kill_worker_on(run_dir: Path, host: str) -> None:
    for path in (run_dir / "ranks").glob("rank-*.start.json"):
        start = json.loads(path.read_text())
        if start["host"] == host:
            os.kill(start["child_pid"], signal.SIGKILL)
            return
    pytest.fail(f"no worker on {host}: {sorted(p.name for p in (run_dir / 'ranks').iterdir())}")


def grow_then_lose_a_host(proc: subprocess.Popen[str], hostfile: Path, added: str,
                          run_dir: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """Drive a running 1-rank job: add ``added`` to the hostfile, wait for 2 ranks, kill the
    worker there, wait for 1 rank again, ask the script to stop; the finished job."""
    wait_until(lambda: progress(out).get("step", 0) >= 4, proc, 150, "no steps at 1 rank")
    with hostfile.open("a") as file:
        file.write(f"{added} slots=1\n")
    wait_until(lambda: progress(out).get("size") == 2, proc, 150, "never grew to 2 ranks")
    grown = progress(out)["step"]
    wait_until(lambda: progress(out).get("step", 0) >= grown + 4, proc, 60, "no steps at 2")
    kill_worker_on(run_dir, added)
    wait_until(lambda: progress(out).get("size") == 1, proc, 120, "never shrank to 1 rank")
    (out / "stop").write_text(str(progress(out)["step"] + 6))  # a few steps ahead
    return finish(proc, JOB_TIMEOUT)


def assert_grew_then_shrank(done: subprocess.CompletedProcess[str], out: Path,
                            survivor: str) -> None:
    said = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, said
    [result] = [json.loads(p.read_text()) for p in out.glob("result-*.json")]
    assert result["host"] == survivor and result["size"] == 1, result
    sizes = [size for size, _ in result["resets"]]
    assert sizes == [2, 1], result
    steps = [step for _, step in result["resets"]]
    # each reset goes on from the committed state: never back to 0, never backwards
    assert 0 < steps[0] <= steps[1] < result["step"], result
    assert result["last_loss"] < result["first_loss"], result
    assert "done at step" in done.stdout + done.stderr, said  # the rank's own line is shown
