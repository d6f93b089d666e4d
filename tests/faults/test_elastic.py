"""Horovod elastic through the real horovodrun (``hvdtrain train --elastic``), on this machine.

Horovod tells hosts apart by name, so ``localhost`` and ``127.0.0.1`` are two hosts here: a
worker killed on ``127.0.0.1`` takes that host out (Horovod blacklists it) and the job goes
on with the ``localhost`` ranks; appending ``127.0.0.1`` to the hostfile makes the job grow to
it. Every run records the training-set indices of its committed steps (``--record-samples``),
so "no sample skipped or repeated across the membership change" is checked exactly, and the
end must be the same as an unbroken run: identical parameters on all ranks, the accuracy band.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from hvdtrain.catalog import FRAMEWORKS
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

# 3 epochs of digits at batch 16 with slow steps: about 6 s per epoch at 3 ranks, so hosts
# change mid-epoch on a busy machine; commits every 5 steps
COMMON = ("--data", "digits", "--batch-size", "16", "--epochs", "3", "--record-samples",
          "--step-delay", "0.2", "--commit-every-steps", "5", "--elastic",
          "--elastic-timeout", "30")
JOB_TIMEOUT = 420.0


def _start(run_dir: Path, hostfile: Path, framework: str, *args: str
           ) -> subprocess.Popen[str]:
    return spawn(hvdtrain("train", "--framework", framework, "--run-dir", str(run_dir),
                          "--hostfile", str(hostfile), *COMMON, *args), job_env())


def _wait_for_checkpoint(run_dir: Path, proc: subprocess.Popen[str]) -> None:
    """Until epoch 1's checkpoint: the job is well into epoch 2 soon after."""
    wait_until(lambda: bool(list((run_dir / "checkpoints").glob("epoch-*.ckpt"))), proc, 240,
               "no checkpoint")
    time.sleep(2.0)  # some steps into epoch 2


def _wait_for_commit_in_epoch_2(run_dir: Path, proc: subprocess.Popen[str]) -> None:
    """Until a mid-epoch commit of epoch 2 is recorded (rank 0 records each commit point)."""
    record = run_dir / "samples" / "committed.jsonl"
    wait_until(lambda: record.is_file() and any(json.loads(line)["epoch"] == 1
                                                for line in record.read_text().splitlines()),
               proc, 240, "no commit in epoch 2")


def _kill_worker_on(run_dir: Path, host: str) -> dict[str, Any]:
    for path in (run_dir / "ranks").glob("rank-*.start.json"):
        start = json.loads(path.read_text())
        if start["host"] == host:
            os.kill(start["child_pid"], signal.SIGKILL)
            return start
    pytest.fail(f"no worker on {host}: {sorted(p.name for p in (run_dir / 'ranks').iterdir())}")


def _assert_finished_like_an_unbroken_run(run_dir: Path, world_size: int) -> None:
    summary = read_summary(run_dir)
    assert summary["epochs_run"] == 3 and summary["world_size"] == world_size
    assert summary["parameters_identical"], summary["parameter_hashes"]
    assert summary["val_accuracy"] >= 0.9
    assert_exactly_once(run_dir, 3)


@pytest.mark.parametrize("framework", FRAMEWORKS.names())
def test_a_killed_worker_leaves_the_job_on_the_survivors(tmp_path: Path,
                                                         framework: str) -> None:
    run_dir, hostfile = tmp_path / "run", tmp_path / "hosts"
    hostfile.write_text("localhost slots=2\n127.0.0.1 slots=1\n")
    proc = _start(run_dir, hostfile, framework, "-np", "3", "--min-np", "2", "--max-np", "3")
    _wait_for_checkpoint(run_dir, proc)
    _wait_for_commit_in_epoch_2(run_dir, proc)
    _kill_worker_on(run_dir, "127.0.0.1")
    code, output = finish_output(proc, JOB_TIMEOUT)
    assert code == 0, output[-4000:]
    # said by whichever worker is rank 0 after the reset (often not the one started as 0)
    assert "hosts changed (a rank failed): 3 -> 2 ranks, continuing from epoch 2" in output
    assert "<stdout>:" not in output and "<stderr>:" not in output  # horovodrun's tags
    _assert_finished_like_an_unbroken_run(run_dir, 2)
    [reset] = read_summary(run_dir)["elastic_resets"]
    assert (reset["old_world_size"], reset["new_world_size"], reset["epoch"]) == (3, 2, 1)
    assert reset["samples_into_epoch"] > 0  # mid-epoch: the rest was re-sharded over 2
    assert json.loads((run_dir / "elastic.json").read_text())[0]["new_world_size"] == 2


@pytest.mark.parametrize("framework", FRAMEWORKS.names())
def test_a_host_added_to_the_hostfile_joins_the_job(tmp_path: Path, framework: str) -> None:
    run_dir, hostfile = tmp_path / "run", tmp_path / "hosts"
    hostfile.write_text("localhost slots=2\n")
    proc = _start(run_dir, hostfile, framework, "-np", "2", "--min-np", "2", "--max-np", "3")
    _wait_for_checkpoint(run_dir, proc)
    with hostfile.open("a") as out:
        out.write("127.0.0.1 slots=1  # joins while the job runs\n")
    code, output = finish_output(proc, JOB_TIMEOUT)
    assert code == 0, output[-4000:]
    assert "hosts changed (hosts added or changed): 2 -> 3 ranks" in output
    _assert_finished_like_an_unbroken_run(run_dir, 3)
    summary = read_summary(run_dir)
    [reset] = summary["elastic_resets"]
    assert (reset["old_world_size"], reset["new_world_size"]) == (2, 3)
    # the newcomer started on the added host and ended with the same parameters
    hosts = [json.loads(p.read_text())["host"] for p in (run_dir / "ranks").glob("*.start.json")]
    assert sorted(hosts) == ["127.0.0.1", "localhost", "localhost"]
    assert len(summary["parameter_hashes"]) == 3


def test_below_min_np_the_job_stops_after_the_elastic_timeout(tmp_path: Path) -> None:
    run_dir, hostfile = tmp_path / "run", tmp_path / "hosts"
    hostfile.write_text("localhost slots=1\n127.0.0.1 slots=1\n")
    proc = _start(run_dir, hostfile, "torch", "-np", "2", "--min-np", "2",
                  "--elastic-timeout", "10")
    _wait_for_checkpoint(run_dir, proc)
    _kill_worker_on(run_dir, "127.0.0.1")
    code, output = finish_output(proc, 240)
    assert code != 0, output[-3000:]
    assert ("hvdtrain: error: elastic: fewer than --min-np 2 slots left, and none came back "
            "within --elastic-timeout; the job stopped") in output, output[-3000:]
    assert f"--resume latest --run-dir {run_dir}" in output
    latest = CheckpointStore(run_dir / "checkpoints").latest()
    assert latest is not None and read_checkpoint_meta(latest)["epoch"] >= 1  # intact
    # as the hint says: resume (here, elastic again on both hosts) and finish exactly once
    again = _start(run_dir, hostfile, "torch", "-np", "2", "--min-np", "2",
                   "--resume", "latest")
    code, output = finish_output(again, JOB_TIMEOUT)
    assert code == 0, output[-4000:]
    assert f"resuming from {latest}" in output
    summary = read_summary(run_dir)
    assert summary["epochs_run"] == 3 and summary["parameters_identical"]
    assert summary["val_accuracy"] >= 0.9
    # (no exactly-once check here: the sample record holds the in-memory commits after the
    # checkpoint, which a total failure loses; the resumed run trains those samples again)


def _wait_for_resets(run_dir: Path, proc: subprocess.Popen[str], count: int) -> None:
    path = run_dir / "elastic.json"
    wait_until(lambda: path.is_file() and len(json.loads(path.read_text() or "[]")) >= count,
               proc, 240, f"no reset {count}")


def test_a_host_removed_then_added_back_neither_deadlocks_nor_loses_samples(
        tmp_path: Path) -> None:
    """horovod#3494's path: a graceful removal (Horovod would skip the state sync), then a
    newcomer (which syncs): hvdtrain syncs on every reset, so both sides meet."""
    run_dir, hostfile = tmp_path / "run", tmp_path / "hosts"
    both = "localhost slots=2\n127.0.0.1 slots=1\n"
    hostfile.write_text(both)
    proc = _start(run_dir, hostfile, "torch", "-np", "3", "--min-np", "2", "--max-np", "3")
    _wait_for_checkpoint(run_dir, proc)
    hostfile.write_text("localhost slots=2\n")
    _wait_for_resets(run_dir, proc, 1)
    time.sleep(2.0)  # some steps on 2 ranks
    hostfile.write_text(both)
    code, output = finish_output(proc, JOB_TIMEOUT)
    assert code == 0, output[-4000:]
    _assert_finished_like_an_unbroken_run(run_dir, 3)
    resets = read_summary(run_dir)["elastic_resets"]
    assert [(r["reason"], r["old_world_size"], r["new_world_size"]) for r in resets] == [
        ("hosts removed", 3, 2), ("hosts added or changed", 2, 3)]


def test_a_stop_request_writes_a_checkpoint_and_exits_75(tmp_path: Path) -> None:
    """SIGUSR1 (Slurm's warning, preemption) works under --elastic as without it: the ranks
    stop at the same step, rank 0 writes a step checkpoint, and the job exits 75 although
    horovodrun itself reports failed workers."""
    run_dir, hostfile = tmp_path / "run", tmp_path / "hosts"
    hostfile.write_text("localhost slots=2\n")
    proc = _start(run_dir, hostfile, "torch", "-np", "2")
    _wait_for_checkpoint(run_dir, proc)
    proc.send_signal(signal.SIGUSR1)
    code, output = finish_output(proc, 120)
    assert code == ExitCode.STOPPED, output[-3000:]
    assert "stopped on SIGUSR1" in output, output[-3000:]
    assert "--resume auto" in output
    latest = CheckpointStore(run_dir / "checkpoints").latest()
    assert latest is not None and "-sample-" in latest.name


def test_the_terminal_shows_the_same_with_and_without_elastic(tmp_path: Path) -> None:
    """One voice in both modes: rank 0's own lines, without horovodrun's ``[0]<stdout>:``
    tags and without its own notes (those are in launcher.log, as mpirun's are)."""
    shown = {}
    for mode in ("plain", "elastic"):
        run_dir = tmp_path / mode
        done = run_job(hvdtrain("train", "-np", "2", "--data", "breast-cancer", "--epochs", "2",
                                "--run-dir", str(run_dir),
                                *(["--elastic"] if mode == "elastic" else [])),
                       timeout=JOB_TIMEOUT)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "<stdout>:" not in done.stdout + done.stderr, done.stdout
        assert "<stderr>:" not in done.stdout + done.stderr, done.stderr
        # what differs from run to run: numbers and the run directory
        shown[mode] = re.sub(r"\d+(\.\d+)?(e[-+]\d+)?", "N",
                             done.stdout.replace(str(run_dir), "RUN_DIR"))
    assert shown["elastic"] == shown["plain"]
    assert shown["plain"].count("epoch N/N  loss") == 2, shown["plain"]


def test_when_rank_0_is_lost_the_new_rank_0_speaks(tmp_path: Path) -> None:
    """The worker started as rank 1 becomes rank 0 at the reset: from then on its lines are
    the ones shown (it tells its wrapper), still without tags."""
    run_dir, hostfile = tmp_path / "run", tmp_path / "hosts"
    hostfile.write_text("localhost slots=1\n127.0.0.1 slots=1\n")
    proc = _start(run_dir, hostfile, "torch", "-np", "2", "--min-np", "1")
    _wait_for_checkpoint(run_dir, proc)
    first = json.loads((run_dir / "ranks" / "rank-0.start.json").read_text())
    os.kill(first["child_pid"], signal.SIGKILL)
    code, output = finish_output(proc, JOB_TIMEOUT)
    assert code == 0, output[-4000:]
    said = "hosts changed (a rank failed): 2 -> 1 ranks"
    assert said in output and "epoch 3/3  loss" in output, output[-4000:]
    logs = run_dir / "logs"  # the new rank 0 said it (a note: on its stderr, via the logger)
    assert said in (logs / "rank-1.out").read_text() + (logs / "rank-1.err").read_text()
    assert "<stdout>:" not in output and "<stderr>:" not in output
    summary = read_summary(run_dir)
    assert summary["epochs_run"] == 3 and summary["world_size"] == 1
