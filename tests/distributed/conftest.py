"""Real multi-rank runs: subprocesses in their own process group, with a hard timeout.

A hang becomes a failure that shows what the job printed, and the whole process group is
killed, so CI is never stuck. Ranks report through files (summary.json, per-rank JSON).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("horovod.torch")

BIN = str(Path(sys.executable).parent)
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str


def job_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    env["PYTHONFAULTHANDLER"] = "1"
    env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    for name in [k for k in env if k.startswith(("HVDTRAIN_", "OMPI_COMM_WORLD", "HOROVOD_"))]:
        del env[name]
    env.update(extra)
    return env


def run_job(argv: list[str], timeout: float = 240, cwd: Path | None = None,
            **env: str) -> Finished:
    proc = subprocess.Popen(argv, cwd=cwd, env=job_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    return finish(proc, timeout)


def finish(proc: subprocess.Popen[str], timeout: float) -> Finished:
    """Wait for a job started in its own session (text pipes); a hang kills its whole
    process group and fails the test with the job's last output."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{proc.args} hung for {timeout} s\n--- stdout ---\n{out[-3000:]}\n"
                    f"--- stderr ---\n{err[-3000:]}")
    return Finished(proc.returncode, out, err)


def hvdtrain(*args: str) -> list[str]:
    return [sys.executable, "-m", "hvdtrain", *args]
