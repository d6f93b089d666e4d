"""hvdtrain under a real Slurm cluster: sbatch, salloc, srun (pmix, pmi2, bare), preemption.

The cluster (tests/helpers/slurm_lab.py) has two nodes, hvdh1 and hvdh2, each a network-namespace
host with its own slurmd; sbatch/salloc/srun run in the root namespace like on a login node.
Run directories live under tmp_path on the filesystem every node shares (like /home or
/scratch on a real cluster). Every client command has a timeout.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.helpers.jobs import REPO, read_summary
from tests.helpers.slurm_lab import SlurmCluster

pytestmark = pytest.mark.slurm
pytest.importorskip("horovod.torch")

SBATCH = REPO / "docker" / "slurm" / "hvdtrain.sbatch"
# 2 nodes x 1 task on the lab's CPU nodes: the script's GPU and CPU requests do not fit them.
SMALL_NODES = ["--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1", "--gpus-per-node=0"]
# A small job that still reaches the accuracy target (val_accuracy >= 0.95).
TRAIN_ARGS = ["--data", "breast-cancer", "--epochs", "3", "--start-timeout", "120"]
TRAIN_TIMEOUT_S = 400


def _hosts_of_ranks(summary: dict[str, object]) -> list[tuple[int, str]]:
    ranks = summary["ranks"]
    assert isinstance(ranks, list)
    return [(int(r["rank"]), str(r["host"])) for r in ranks]


def _tree(path: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``path`` with its size and mtime: equal = nothing changed."""
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*"))}


def test_cluster_has_two_real_hosts(slurm_cluster: SlurmCluster) -> None:
    done = slurm_cluster.run(["srun", "--nodes=2", "--ntasks-per-node=1", "--label",
                              "hostname"], timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split()) == ["0:", "1:", "hvdh1", "hvdh2"]
    assert slurm_cluster.wait_idle() == []


def test_salloc_plan_shows_two_hosts(slurm_cluster: SlurmCluster) -> None:
    done = slurm_cluster.run(["salloc", "--nodes=2", "--ntasks-per-node=1", "hvdtrain", "plan"],
                             timeout=120)
    assert done.returncode == 0, done.stderr
    assert "source: Slurm allocation hvdh[1-2]" in done.stdout, done.stdout
    rows = [line.split() for line in done.stdout.splitlines()
            if line.split()[:1] in (["0"], ["1"])]
    assert [row[:2] for row in rows] == [["0", "hvdh1"], ["1", "hvdh2"]], done.stdout
    print(done.stdout)
    assert slurm_cluster.wait_idle() == []


def test_srun_pmix_tasks_are_the_ranks(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    run_dir = tmp_path / "pmix"
    start = time.monotonic()
    done = slurm_cluster.run(["srun", "--nodes=2", "--ntasks-per-node=1", "--mpi=pmix",
                              "hvdtrain", "train", "--run-dir", str(run_dir), *TRAIN_ARGS],
                             timeout=TRAIN_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    summary = read_summary(run_dir)
    assert summary["world_size"] == 2 and summary["parameters_identical"] is True
    assert float(str(summary["val_accuracy"])) >= 0.95, summary
    assert _hosts_of_ranks(summary) == [(0, "hvdh1"), (1, "hvdh2")]
    print(f"srun --mpi=pmix: trained in {time.monotonic() - start:.0f} s")
    assert slurm_cluster.wait_idle() == []


def test_srun_pmi2_is_refused_because_open_mpi_lacks_it(slurm_cluster: SlurmCluster,
                                                       tmp_path: Path) -> None:
    """Debian's Open MPI 4.1 has no Slurm PMI-2 support: MPI_Init aborts in every task (shown
    first with Horovod itself), so hvdtrain refuses at once, saying why and what to use."""
    probe = slurm_cluster.run(
        ["srun", "--nodes=2", "--ntasks-per-node=1", "--mpi=pmi2", str(REPO / ".venv/bin/python"),
         "-c", "import horovod.torch as hvd; hvd.init(); print('size', hvd.size())"],
        timeout=180)
    assert probe.returncode != 0
    assert "OMPI was not built with SLURM's PMI support" in probe.stdout + probe.stderr

    run_dir = tmp_path / "pmi2"
    start = time.monotonic()
    done = slurm_cluster.run(["srun", "--nodes=2", "--ntasks-per-node=1", "--mpi=pmi2",
                              "hvdtrain", "train", "--run-dir", str(run_dir), *TRAIN_ARGS],
                             timeout=120)
    elapsed = time.monotonic() - start
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if "hvdtrain: error" in line]
    assert len(errors) == 2, done.stderr  # one per task, each one line
    assert all("Open MPI was built without Slurm's PMI-2" in line for line in errors)
    assert "use 'srun --mpi=pmix'" in done.stderr and "Traceback" not in done.stderr
    assert not run_dir.exists() and elapsed < 60, elapsed
    assert slurm_cluster.wait_idle() == []


def test_bare_srun_fails_fast_with_the_fix(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    """`srun -n2 hvdtrain train`: each task would be a launcher. Every task stops at once with
    one line (and the hint); the run directory, here one that already holds a run, is left
    exactly as it was."""
    run_dir = tmp_path / "bare"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text('{"earlier": "run"}\n')
    before = _tree(run_dir)
    start = time.monotonic()
    done = slurm_cluster.run(["srun", "--nodes=2", "--ntasks-per-node=1", "hvdtrain", "train",
                              "--run-dir", str(run_dir), *TRAIN_ARGS], timeout=120)
    elapsed = time.monotonic() - start
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if "hvdtrain: error" in line]
    assert len(errors) == 2, done.stderr
    assert all("without an MPI rank: each task would launch its own job" in e for e in errors)
    assert "use 'srun --mpi=pmix'" in done.stderr and "Traceback" not in done.stderr
    assert _tree(run_dir) == before
    assert elapsed < 60, elapsed
    print(f"bare srun refused in {elapsed:.1f} s:\n{done.stderr}")
    assert slurm_cluster.wait_idle() == []


def test_sbatch_script_trains_on_two_hosts(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    run_dir = tmp_path / "sbatch"
    output = tmp_path / "job.out"
    start = time.monotonic()
    job_id = slurm_cluster.sbatch(*SMALL_NODES, f"--output={output}", str(SBATCH), *TRAIN_ARGS,
                                  cwd=tmp_path, HVDTRAIN_RUN_DIR=str(run_dir))
    job = slurm_cluster.wait_for(job_id, ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT",
                                          "NODE_FAIL", "OUT_OF_MEMORY"], timeout=TRAIN_TIMEOUT_S)
    text = output.read_text() if output.exists() else "(no job output)"
    assert (job.state, job.exit_code) == ("COMPLETED", 0), text[-4000:]
    summary = read_summary(run_dir)
    assert float(str(summary["val_accuracy"])) >= 0.95, summary
    assert summary["parameters_identical"] is True
    assert _hosts_of_ranks(summary) == [(0, "hvdh1"), (1, "hvdh2")]
    assert "2 ranks on hvdh1(1), hvdh2(1)" in text, text  # the plan, in the job's output
    print(f"sbatch job {job_id}: {time.monotonic() - start:.0f} s\n{_said(text)}")
    assert slurm_cluster.wait_idle() == []


# Long epochs (13107 samples / 2 ranks / 32 = 205 steps), so the signal lands mid-epoch.
PREEMPT_ARGS = ["--data", "synthetic", "--epochs", "2", "--batch-size", "32",
                "--start-timeout", "120", "--log-every-seconds", "0.5"]
# a job's output is a file, not a terminal: plain progress lines (training.progress); this
# one says that epoch 1 has taken steps
FIRST_STEPS = r"epoch 1/2: ([1-9]\d*)/\d+ steps"
STOPPED = re.compile(r"stopped on SIGUSR1 at epoch (\d+) step (\d+) \(of (\d+)\)")


def test_preempted_job_requeues_and_loses_no_step(slurm_cluster: SlurmCluster,
                                                  tmp_path: Path) -> None:
    """`scancel --batch --signal=USR1` mid-epoch (what `--signal=B:USR1@120` does before a time
    limit): the script passes it on, every rank stops at its next agreed step, rank 0 writes a
    step checkpoint, hvdtrain exits 75, the script requeues the job, and the requeued job (same
    id, same run directory) continues with `--resume auto` from exactly that step."""
    run_dir = tmp_path / "preempt"
    output = tmp_path / "job.out"
    start = time.monotonic()
    job_id = slurm_cluster.sbatch(*SMALL_NODES, f"--output={output}", str(SBATCH),
                                  *PREEMPT_ARGS, cwd=tmp_path, HVDTRAIN_RUN_DIR=str(run_dir))
    # Training has begun when rank 0's first epoch bar shows progress.
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while not re.search(FIRST_STEPS, _read(output)):
        assert time.monotonic() < deadline, _read(output)[-3000:]
        assert slurm_cluster.job(job_id).state in ("PENDING", "RUNNING"), _read(output)[-3000:]
        time.sleep(0.5)
    signalled = slurm_cluster.run(["scancel", "--batch", "--signal=USR1", job_id], timeout=30)
    assert signalled.returncode == 0, signalled.stderr

    # Requeued: Slurm holds a requeued job back for about two minutes (its BeginTime), which
    # an administrator may shorten; this test does, to stay short. Not to "now": a start in
    # the same second as the requeue is refused ("Job credential revoked": the nodes revoke
    # the job's credentials up to that second) and the job fails.
    slurm_cluster.wait_requeued(job_id, timeout=TRAIN_TIMEOUT_S)
    lifted = slurm_cluster.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now+5"],
                               timeout=30)
    assert lifted.returncode == 0, lifted.stderr
    # The requeued run finishes: the job ends COMPLETED after one restart.
    job = slurm_cluster.wait_for(job_id, ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"],
                                 timeout=TRAIN_TIMEOUT_S * 2)
    text = _read(output)
    assert (job.state, job.exit_code) == ("COMPLETED", 0), text[-4000:]
    assert job.fields.get("Restarts") == "1", job.fields
    stopped = STOPPED.search(text)
    assert stopped, text[-4000:]
    epoch, step, steps = (int(g) for g in stopped.groups())
    assert epoch == 1 and 0 < step < steps, stopped.group(0)  # mid-epoch
    assert f"requeueing job {job_id}" in text
    assert "(restart 1)" in text and "resuming from" in text

    summary = read_summary(run_dir)
    assert summary["epochs_run"] == 2 and summary["parameters_identical"] is True
    resumes = summary["resumes"]
    assert isinstance(resumes, list) and len(resumes) == 1, resumes
    # No completed step lost: the resume starts right after the last step trained.
    assert resumes[0]["epoch"] == 0
    assert resumes[0]["samples_into_epoch"] == step * 32 * 2, (resumes[0], stopped.group(0))
    assert (resumes[0]["from_world_size"], resumes[0]["to_world_size"]) == (2, 2)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    first = [m for m in metrics if m.get("epoch") == 1]
    assert first and first[-1].get("resumed_after_samples") == step * 32 * 2, first
    print(f"preempted job {job_id}: {time.monotonic() - start:.0f} s; {stopped.group(0)}\n"
          f"{_said(text)}\nresumes: {resumes}")
    assert slurm_cluster.wait_idle() == []


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _said(text: str) -> str:
    """hvdtrain's own lines and the epoch results of a job's output (no progress bars)."""
    keep = re.compile(r"^(hvdtrain:|done:|epoch \d+/\d+  loss)")
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.splitlines()
                     if keep.match(line.rsplit("\r", 1)[-1]))


def test_sigterm_to_the_whole_job_stops_with_a_checkpoint(slurm_cluster: SlurmCluster,
                                                          tmp_path: Path) -> None:
    """SIGTERM as a signal to every process of the job (the batch script, hvdtrain, mpirun,
    the ranks, orted), as preemption with a GraceTime sends it: the same stop at a step with a
    checkpoint and exit 75. Here the script does not requeue (HVDTRAIN_REQUEUE=0); a second
    sbatch with the same run directory continues the run (`--resume auto`)."""
    run_dir = tmp_path / "term"
    output = tmp_path / "job.out"
    job_id = slurm_cluster.sbatch(*SMALL_NODES, f"--output={output}", str(SBATCH),
                                  *PREEMPT_ARGS, cwd=tmp_path, HVDTRAIN_RUN_DIR=str(run_dir),
                                  HVDTRAIN_REQUEUE="0")
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while not re.search(FIRST_STEPS, _read(output)):
        assert time.monotonic() < deadline, _read(output)[-3000:]
        assert slurm_cluster.job(job_id).state in ("PENDING", "RUNNING"), _read(output)[-3000:]
        time.sleep(0.5)
    signalled = slurm_cluster.run(["scancel", "--full", "--signal=TERM", job_id], timeout=30)
    assert signalled.returncode == 0, signalled.stderr
    job = slurm_cluster.wait_for(job_id, ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"],
                                 timeout=TRAIN_TIMEOUT_S)
    text = _read(output)
    assert (job.state, job.exit_code) == ("FAILED", 75), _said(text)
    stopped = re.search(r"at epoch 1 step (\d+) \(of (\d+)\); checkpoint (\S+) written", text)
    assert stopped, _said(text)
    step, steps = int(stopped.group(1)), int(stopped.group(2))
    assert 0 < step < steps and Path(stopped.group(3)).is_file()
    assert "requeueing" not in text and int(job.fields.get("Restarts", "0")) == 0

    again = tmp_path / "again.out"
    second = slurm_cluster.sbatch(*SMALL_NODES, f"--output={again}", str(SBATCH), *PREEMPT_ARGS,
                                  cwd=tmp_path, HVDTRAIN_RUN_DIR=str(run_dir))
    job = slurm_cluster.wait_for(second, ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"],
                                 timeout=TRAIN_TIMEOUT_S)
    assert (job.state, job.exit_code) == ("COMPLETED", 0), _said(_read(again))
    resumes = read_summary(run_dir)["resumes"]
    assert isinstance(resumes, list) and len(resumes) == 1
    assert (resumes[0]["epoch"], resumes[0]["samples_into_epoch"]) == (0, step * 32 * 2)
    print(f"SIGTERM to job {job_id}: {_said(text)}\nsecond sbatch {second}: "
          f"{_said(_read(again))}")
    assert slurm_cluster.wait_idle() == []


def test_scancel_cancels_and_does_not_requeue(slurm_cluster: SlurmCluster,
                                              tmp_path: Path) -> None:
    """`scancel JOB` ends the job outright: it must stay cancelled (the script requeues only
    after a stop with a checkpoint), and nothing of it may be left on the hosts."""
    output = tmp_path / "job.out"
    job_id = slurm_cluster.sbatch(*SMALL_NODES, f"--output={output}", str(SBATCH),
                                  *PREEMPT_ARGS, cwd=tmp_path,
                                  HVDTRAIN_RUN_DIR=str(tmp_path / "cancel"))
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while not re.search(FIRST_STEPS, _read(output)):
        assert time.monotonic() < deadline, _read(output)[-3000:]
        assert slurm_cluster.job(job_id).state in ("PENDING", "RUNNING"), _read(output)[-3000:]
        time.sleep(0.5)
    cancelled = slurm_cluster.run(["scancel", job_id], timeout=30)
    assert cancelled.returncode == 0, cancelled.stderr
    slurm_cluster.wait_for(job_id, ["CANCELLED", "COMPLETED", "FAILED"], timeout=120)
    assert slurm_cluster.wait_idle() == []
    job = slurm_cluster.job(job_id)  # still cancelled once everything has settled
    assert (job.state, job.fields.get("Restarts")) == ("CANCELLED", "0"), job.fields
    assert "requeueing" not in _read(output)
