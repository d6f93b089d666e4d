"""Nothing of a job outlives its launcher killed with SIGKILL, on this machine (issue 22,
item 3): the local guard of ``make test``; tests/multihost/test_killed_launcher.py has the
cases across hosts, under horovodrun and ``--elastic``.

SIGKILL is what the OOM killer sends: ``hvdtrain`` stops nothing, so the launcher it started
(mpirun, horovodrun) and every rank must end by themselves within 10 s.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tests.helpers.job_processes import (
    kill_launcher,
    leftovers_after,
    output,
    remove_leftovers,
    start_job,
    wait_for_ranks,
)
from tests.helpers.jobs import REPO, hvdtrain, job_env

SCRIPT = REPO / "tests" / "fixtures" / "allreduce_loop.py"


def _kill_and_check(argv: list[str], tmp_path: Path, ready: Path, suffix: str) -> None:
    run_dir, out_dir = tmp_path / "run", tmp_path / "out"
    proc = start_job(argv, job_env(), out_dir, cwd=REPO)
    try:
        wait_for_ranks(ready, 2, suffix, proc, 180, out_dir)
        kill_launcher(proc)
        killed = time.monotonic()
        left = leftovers_after(run_dir)
        assert left == {}, f"left 10 s after the launcher was killed: {left}\n{output(out_dir)}"
        print(f"nothing of the job left {time.monotonic() - killed:.1f} s after the kill")
    finally:
        remove_leftovers(run_dir, proc)


def test_killed_train_launcher_leaves_no_process(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    argv = hvdtrain("train", "-np", "2", "--run-dir", str(run_dir), "--data", "digits",
                    "--batch-size", "16", "--epochs", "20", "--step-delay", "0.2")
    _kill_and_check(argv, tmp_path, run_dir / "ranks", "ready.json")


def test_killed_launch_of_a_silent_script_leaves_no_process(tmp_path: Path) -> None:
    """A user's script that prints nothing (so no broken pipe tells it anything), under
    horovodrun: its Python driver between hvdtrain and the ranks must end too."""
    looping = tmp_path / "looping"
    looping.mkdir()
    argv = hvdtrain("launch", "-np", "2", "--launcher", "horovodrun", "--controller", "gloo",
                    "--run-dir", str(tmp_path / "run"), "--", sys.executable, str(SCRIPT),
                    "300", str(looping))
    _kill_and_check(argv, tmp_path, looping, "looping")
