"""Running a job from a test: ``hvdtrain`` (or a launcher, or any client command) as a
subprocess with a clean environment, in its own session, with a hard timeout.

A hang becomes a failure that shows what the job printed, and the job's whole process group is
killed, so CI is never stuck. Jobs report through files (``summary.json``, per-rank JSON): a
test waits for a file while the job runs with ``wait_until``, and reads the summary with
``read_summary``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = str(Path(sys.executable).parent)  # this interpreter's scripts: hvdtrain, horovodrun
# What the namespace hosts (tests/multihost, tests/slurm) run: the repository's venv, whose path
# is the same on every host.
VENV_BIN = REPO / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python")
# An outer job's rank and hvdtrain's own settings: a test's job must not inherit them.
RANK_VARIABLES = ("HVDTRAIN_", "OMPI_COMM_WORLD", "HOROVOD_")
TAIL = 3000  # characters of a job's stdout and stderr in a failure message


def clean_env(prefixes: tuple[str, ...] = RANK_VARIABLES, *, drop: Iterable[str] = (),
              path: str | Path | None = None, **variables: str) -> dict[str, str]:
    """This process's environment without the variables whose names start with one of
    ``prefixes`` or are named in ``drop``; ``path`` first on PATH; ``variables`` added."""
    dropped = set(drop)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(prefixes) and k not in dropped}
    if path is not None:
        env["PATH"] = f"{path}{os.pathsep}{env.get('PATH', '')}"
    env.update(variables)
    return env


def job_env(**extra: str) -> dict[str, str]:
    """For a job on this machine: this interpreter's scripts first on PATH, stacks on a hang
    (faulthandler), Open MPI allowed to run as root, then ``extra``."""
    env = clean_env(path=BIN, PYTHONFAULTHANDLER="1", OMPI_ALLOW_RUN_AS_ROOT="1",
                    OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.update(extra)
    return env


def lab_env(**extra: str) -> dict[str, str]:
    """For a job launched onto the namespace hosts: the venv's scripts first on PATH, stacks
    on a hang (faulthandler), then ``extra``."""
    env = clean_env(path=VENV_BIN, PYTHONFAULTHANDLER="1")
    env.update(extra)
    return env


def hvdtrain(*args: str) -> list[str]:
    """The argv of ``hvdtrain ARGS`` run by this interpreter."""
    return [sys.executable, "-m", "hvdtrain", *args]


def spawn(argv: Sequence[str], env: dict[str, str], cwd: Path | None = None,
          stdin: int | None = None) -> subprocess.Popen[str]:
    """``argv`` in its own session (so its whole process group can be killed), its output
    into text pipes that ``finish`` reads."""
    return subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _tails(out: str, err: str) -> str:
    return f"--- stdout ---\n{out[-TAIL:]}\n--- stderr ---\n{err[-TAIL:]}"


def finish(proc: subprocess.Popen[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Wait for a job started with ``spawn``; a hang kills its whole process group and fails
    the test with the job's last output."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{proc.args!r} hung for {timeout} s\n{_tails(out, err)}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def finish_output(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str]:
    """``finish``, as the exit status and stdout followed by stderr."""
    done = finish(proc, timeout)
    return done.returncode, done.stdout + done.stderr


def run_job(argv: list[str], timeout: float = 240, cwd: Path | None = None,
            **env: str) -> subprocess.CompletedProcess[str]:
    """``argv`` on this machine to completion (``job_env(**env)``)."""
    return finish(spawn(argv, job_env(**env), cwd), timeout)


def run_cli(argv: list[str], timeout: float = 300, cwd: Path = REPO,
            **variables: str) -> subprocess.CompletedProcess[str]:
    """``argv`` onto the namespace hosts to completion (``lab_env(**variables)``, no stdin)."""
    return finish(spawn(argv, lab_env(**variables), cwd, stdin=subprocess.DEVNULL), timeout)


def poll_until(ready: Callable[[], bool], proc: subprocess.Popen[Any], timeout: float,
               interval: float = 0.2) -> str | None:
    """Poll ``ready()`` every ``interval`` s while ``proc`` runs: None once it holds, else why
    it never did, for a failure message."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            return f"the process ended first (exit {proc.returncode})"
        if time.monotonic() > deadline:
            return f"not within {timeout:g} s"
        time.sleep(interval)
    return None


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen[str], timeout: float,
               what: str, interval: float = 0.2) -> None:
    """Until ``ready()`` (a file the job writes appeared, ...); the job ending first, or
    ``timeout``, fails the test with ``what`` and the job's output (a job still running is
    killed with its process group first)."""
    why = poll_until(ready, proc, timeout, interval)
    if why is None:
        return
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    out, err = proc.communicate()
    pytest.fail(f"{what}: {why}\n{_tails(out, err)}")


def read_summary(run_dir: Path) -> dict[str, Any]:
    """The run's ``summary.json``."""
    summary: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
    return summary
