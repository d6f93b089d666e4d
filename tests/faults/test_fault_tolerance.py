"""Fault tolerance through the real launcher: a rank killed mid-epoch is restarted from the
newest step checkpoint; a job stopped on SIGUSR1 resumes at another world size; a job killed
outright resumes from a complete checkpoint. Every run records the training-set indices of its
committed steps (``--record-samples``), so "no sample skipped or repeated" is checked exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from hvdtrain.errors import ExitCode
from hvdtrain.training.checkpoint import CheckpointStore, read_checkpoint_meta
from tests.helpers.jobs import (
    finish_output,
    hvdtrain,
    job_env,
    read_summary,
    run_job,
    spawn,
    wait_until,
)
from tests.helpers.samples import assert_exactly_once

pytest.importorskip("horovod.torch")

# slow steps (seconds each) so a signal lands mid-epoch on a busy machine
COMMON = ("--data", "digits", "--batch-size", "32", "--record-samples", "--step-delay", "0.15",
          "--checkpoint-every-steps", "3", "--lr", "0.003",
          "--stop-timeout", "120")  # 4 ranks on a busy 2-core machine stop slowly
JOB_TIMEOUT = 300.0


def _start(run_dir: Path, *args: str) -> subprocess.Popen[str]:
    return spawn(hvdtrain("train", "--run-dir", str(run_dir), *COMMON, *args), job_env())


def _wait_for_step_checkpoint(run_dir: Path, proc: subprocess.Popen[str], epoch: int) -> None:
    """Until a step checkpoint inside epoch ``epoch + 1`` (``epoch`` whole epochs done)."""
    def ready() -> bool:
        names = [p.name for p in (run_dir / "checkpoints").glob("epoch-*-sample-*.ckpt")]
        return any(int(n.split("-")[1]) >= epoch for n in names)

    wait_until(ready, proc, 240, f"no step checkpoint in epoch {epoch + 1}", interval=0.1)


def test_a_killed_rank_is_restarted_from_the_step_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = _start(run_dir, "-np", "2", "--epochs", "3", "--max-restarts", "2")
    _wait_for_step_checkpoint(run_dir, proc, epoch=1)
    victim = json.loads((run_dir / "ranks" / "rank-1.start.json").read_text())
    os.kill(victim["child_pid"], signal.SIGKILL)  # rank 1 dies mid-epoch 2
    code, output = finish_output(proc, JOB_TIMEOUT)
    assert code == 0, output[-3000:]
    assert "restart 1 of 2: rank 1 on" in output and "killed by signal 9" in output
    summary = read_summary(run_dir)
    assert summary["epochs_run"] == 3 and summary["parameters_identical"]
    assert summary["val_accuracy"] >= 0.9
    [restart] = summary["restarts"]
    assert restart["old_world_size"] == restart["new_world_size"] == 2
    assert restart["resume_from"].startswith("epoch-0001-sample-")
    [resume] = summary["resumes"]
    assert resume["epoch"] == 1 and resume["samples_into_epoch"] > 0
    assert (run_dir / "attempts" / "0" / "logs").is_dir()  # the failed attempt's logs kept
    assert_exactly_once(run_dir, 3)


@pytest.mark.parametrize(("framework", "before", "after"),
                         [("torch", 4, 2), ("tensorflow", 2, 3)])
def test_stopped_on_sigusr1_then_resumed_at_another_world_size(
        tmp_path: Path, framework: str, before: int, after: int) -> None:
    run_dir = tmp_path / "run"
    args = ("--framework", framework, "--epochs", "2")
    proc = _start(run_dir, "-np", str(before), *args)
    _wait_for_step_checkpoint(run_dir, proc, epoch=0)
    proc.send_signal(signal.SIGUSR1)  # what Slurm's --signal=USR1@T sends
    code, output = finish_output(proc, JOB_TIMEOUT)
    assert code == ExitCode.STOPPED, output[-3000:]
    assert "stopped on SIGUSR1" in output and "--resume auto" in output
    assert not (run_dir / "summary.json").exists()
    latest = CheckpointStore(run_dir / "checkpoints").latest()
    assert latest is not None and "-sample-" in latest.name  # stopped mid-epoch, with a file
    assert read_checkpoint_meta(latest)["world_size"] == before

    done = run_job(hvdtrain("train", "--run-dir", str(run_dir), *COMMON, *args,
                            "-np", str(after), "--resume", "auto"), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = read_summary(run_dir)
    [resume] = summary["resumes"]
    assert (resume["from_world_size"], resume["to_world_size"]) == (before, after)
    assert summary["world_size"] == after and summary["parameters_identical"]
    assert summary["val_accuracy"] >= 0.85  # the same band as an unbroken 2-epoch run
    assert_exactly_once(run_dir, 2)


def test_sigkill_of_the_whole_job_loses_no_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = _start(run_dir, "-np", "2", "--epochs", "2")
    _wait_for_step_checkpoint(run_dir, proc, epoch=1)
    pids = {proc.pid}
    for start in (run_dir / "ranks").glob("*.start.json"):
        record = json.loads(start.read_text())
        pids |= {record["pid"], record["child_pid"]}
    for pid in pids:  # everything at once, as a power cut would
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate(timeout=60)
    store = CheckpointStore(run_dir / "checkpoints")
    latest = store.latest()
    assert latest is not None and latest.name.startswith("epoch-0001")  # epoch 1 is kept
    for _, path in store.files():  # whatever the kill interrupted, "latest" is complete
        read_checkpoint_meta(path)
    done = run_job(hvdtrain("train", "--run-dir", str(run_dir), *COMMON, "-np", "2",
                            "--epochs", "2", "--resume", "latest"), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_summary(run_dir)["epochs_run"] == 2
    assert_exactly_once(run_dir, 2)


def test_a_failure_that_would_repeat_is_not_restarted(tmp_path: Path) -> None:
    done = run_job(hvdtrain("train", "-np", "2", "--lr", "1e30", "--epochs", "1",
                            "--max-restarts", "3", "--run-dir", str(tmp_path / "run")),
                   timeout=180)
    assert done.returncode == 8, done.stderr[-2000:]  # diverged in the ranks: once, not 4 times
    assert "not restarting: exit code 8 means a restart would fail the same way" in done.stderr
    assert not (tmp_path / "run" / "attempts").exists()
