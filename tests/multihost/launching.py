"""Running the ``hvdtrain`` CLI from a multi-host test: a clean environment (no inherited
``HVDTRAIN_*``/rank variables), its own process group, and a hang turned into a failure that
shows what it printed. A plain module shared by the multihost tests."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.namespace_lab import REPO

PYTHON = str(REPO / ".venv" / "bin" / "python")


def run_cli(argv: list[str], timeout: float = 300, cwd: Path = REPO,
            **variables: str) -> subprocess.CompletedProcess[str]:
    """``argv`` to completion within ``timeout`` s, with ``variables`` added to a clean
    environment."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HVDTRAIN_", "OMPI_COMM_WORLD", "HOROVOD_"))}
    env.update(PATH=f"{Path(PYTHON).parent}:{env.get('PATH', '')}", PYTHONFAULTHANDLER="1",
               **variables)
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            stdin=subprocess.DEVNULL)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{argv} hung\n{out[-3000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)
