"""A user's own Horovod script under ``hvdtrain launch``: restarted after a crash and resuming
from its own checkpoint, stopped on SIGUSR1 with its checkpoint complete, and not restarted
for an exit code it declares final. The script (tests/fixtures/user_restart_script.py) adds a
1 per rank per step into a total it checkpoints, so a correct resume ends with
``total == steps * ranks``: a step lost or repeated shows.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from hvdtrain.errors import ExitCode
from tests.helpers.jobs import finish_output, hvdtrain, job_env, run_job, spawn, wait_until

pytest.importorskip("horovod.torch")

REPO = Path(__file__).resolve().parents[2]
SCRIPT = str(REPO / "tests" / "fixtures" / "user_restart_script.py")
STEPS = 30
JOB_TIMEOUT = 240.0


def _launch(run_dir: Path, out: Path, *args: str, script_args: tuple[str, ...] = ()
            ) -> list[str]:
    out.mkdir(exist_ok=True)
    return hvdtrain("launch", "-np", "2", "--run-dir", str(run_dir), *args, "--",
                    sys.executable, SCRIPT, str(STEPS), str(out), *script_args)


def _results(out: Path) -> list[dict[str, Any]]:
    return [json.loads((out / f"result-rank-{r}.json").read_text()) for r in range(2)]


def test_a_crashed_rank_is_restarted_and_the_script_resumes(tmp_path: Path) -> None:
    run_dir, out = tmp_path / "run", tmp_path / "out"
    done = run_job(_launch(run_dir, out, "--max-restarts", "1", "--no-restart-on", "3",
                           script_args=("--crash-at", "12", "--crash-code", "13")),
                   timeout=JOB_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "restart 1 of 1: rank 1 on" in done.stderr and "HVDTRAIN_ATTEMPT=1" in done.stderr
    results = _results(out)
    for result in results:
        assert result["attempt"] == 1 and result["world_size_env"] == result["size"] == 2
        # its own checkpoint: the steps before the crash (rank 0 saves after each step)
        assert 0 < result["resumed_from"] <= 12
        assert result["total"] == STEPS * 2  # nothing lost, nothing counted twice
    assert results[0]["resumed_from"] == results[1]["resumed_from"]
    [restart] = json.loads((run_dir / "restarts.json").read_text())
    assert restart["reason"].startswith("rank 1 on ") and restart["exit_code"] == 13
    assert restart["old_world_size"] == restart["new_world_size"] == 2
    assert (run_dir / "attempts" / "0" / "logs").is_dir()


def _stop_with_usr1(argv: list[str], env: dict[str, str], out: Path
                    ) -> tuple[str, dict[str, Any]]:
    """Start the job, send SIGUSR1 once the script has checkpointed, expect exit 75: its
    output and the checkpoint the script left."""
    proc = spawn(argv, env)
    checkpoint = out / "checkpoint.json"
    wait_until(checkpoint.exists, proc, JOB_TIMEOUT, "no checkpoint from the script")
    proc.send_signal(signal.SIGUSR1)  # Slurm's --signal=USR1@T, scancel --signal=USR1
    code, output = finish_output(proc, JOB_TIMEOUT)
    assert code == ExitCode.STOPPED, output[-3000:]
    saved = json.loads(checkpoint.read_text())  # complete: it parses
    assert 0 < saved["step"] < STEPS and saved["total"] == saved["step"] * 2
    return output, saved


def test_sigusr1_stops_the_script_with_its_checkpoint(tmp_path: Path) -> None:
    run_dir, out = tmp_path / "run", tmp_path / "out"
    output, saved = _stop_with_usr1(
        _launch(run_dir, out, "--max-restarts", "2", "--stop-timeout", "60",
                script_args=("--step-seconds", "0.2")), job_env(), out)
    assert "SIGUSR1 received: passed on to every rank as SIGUSR1" in output
    assert "the program stopped on SIGUSR1 (exit code 75)" in output
    # the checkpoint is of the step every rank stopped at
    stopped_at = {int((out / f"stopped-rank-{r}").read_text()) for r in range(2)}
    assert stopped_at == {saved["step"]}
    assert not (run_dir / "attempts").exists()  # a stop is never restarted


def test_an_exit_code_declared_final_is_not_restarted(tmp_path: Path) -> None:
    run_dir, out = tmp_path / "run", tmp_path / "out"
    done = run_job(_launch(run_dir, out, "--max-restarts", "2", "--no-restart-on", "3,4",
                           script_args=("--crash-at", "2", "--crash-code", "3")),
                   timeout=JOB_TIMEOUT)
    assert done.returncode == 3, done.stderr[-3000:]
    assert "not restarting: exit code 3 means a restart would fail the same way" in done.stderr
    assert not (run_dir / "attempts").exists() and not (run_dir / "restarts.json").exists()
    assert not list(out.glob("result-rank-*.json"))


def test_the_slurm_batch_script_passes_the_stop_on_to_launch(tmp_path: Path) -> None:
    """docker/slurm/hvdtrain.sbatch with HVDTRAIN_COMMAND=launch, run as the batch shell
    (no Slurm: no requeue): Slurm's --signal=B:USR1 reaches the shell only, which passes it on."""
    out = tmp_path / "out"
    out.mkdir()
    _stop_with_usr1(["bash", str(REPO / "docker" / "slurm" / "hvdtrain.sbatch"), "-np", "2",
                     "--stop-timeout", "60", "--", sys.executable, SCRIPT, str(STEPS), str(out),
                     "--step-seconds", "0.2"],
                    job_env(HVDTRAIN_COMMAND="launch", HVDTRAIN_RUN_DIR=str(tmp_path / "run")),
                    out)
