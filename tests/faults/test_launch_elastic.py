"""Users' own elastic Horovod scripts under ``hvdtrain launch --elastic``, on this machine.

One run per framework (PyTorch, TensorFlow with Keras 3) covers both membership changes, to
keep the suite short: the job starts with one rank on ``localhost``; ``127.0.0.1`` appended to
the hostfile makes it grow to two (Horovod tells hosts apart by name); then the worker on
``127.0.0.1`` is killed and the job goes on with the ``localhost`` rank alone (Horovod
blacklists the host). The script (``tests/fixtures/elastic_user_script.py``) records each
reset as (world size, committed step): 1 -> 2 -> 1, each from where the committed state was,
never from step 0.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers.jobs import PYTHON, hvdtrain, job_env, spawn
from tests.helpers.user_elastic import ENV, SCRIPT, assert_grew_then_shrank, grow_then_lose_a_host


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_a_users_elastic_script_grows_onto_a_new_host_and_survives_a_killed_worker(
        tmp_path: Path, framework: str) -> None:
    pytest.importorskip(f"horovod.{framework}")
    hostfile, run_dir, out = tmp_path / "hosts", tmp_path / "run", tmp_path / "out"
    hostfile.write_text("localhost slots=1\n")
    out.mkdir()
    proc = spawn(hvdtrain("launch", "--elastic", "--min-np", "1", "--max-np", "2",
                          "--hostfile", str(hostfile), "--run-dir", str(run_dir),
                          "--elastic-timeout", "30", "--",
                          PYTHON, str(SCRIPT), framework, str(out)),
                 job_env(**ENV), stdin=subprocess.DEVNULL)
    done = grow_then_lose_a_host(proc, hostfile, "127.0.0.1", run_dir, out)
    assert_grew_then_shrank(done, out, "localhost")
