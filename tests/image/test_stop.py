"""SIGTERM to a training job in a container: ``podman stop`` (SIGTERM to PID 1, tini, which
passes it to the job's process group) ends it well inside the grace period with a checkpoint
and exit 75 (``ExitCode.STOPPED``: resume with ``--resume auto``, docs/FAULT_TOLERANCE.md), and
nothing of the job is left behind."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from hvdtrain.errors import ExitCode
from tests.helpers.image_lab import TEST_TIMEOUT_S, BuiltImage, Containers, note, podman
from tests.helpers.jobs import finish, wait_until
from tests.image.test_jobs import chown_to_image_user

pytestmark = pytest.mark.timeout(TEST_TIMEOUT_S)  # the first test waits for the builds

STOP_GRACE_S = 30  # podman stop -t: SIGTERM, then SIGKILL after this many seconds
START_TIMEOUT_S = 300  # until the first epoch is done (a busy 2-core machine)
# A job that outlives any test: it only ends by being stopped.
ENDLESS = ("train", "--epochs", "5000")

# Inside the container: SIGTERM to the job (the `hvdtrain train` that `podman exec` started,
# whose parent is outside the container: ppid 0), then every process as "PID PPID CMDLINE".
TERM_THE_JOB = """
import os, signal
for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit()):
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode().strip()
        ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except OSError:
        continue
    if ppid == 0 and pid != 1 and "/bin/hvdtrain train" in cmd:
        os.kill(pid, signal.SIGTERM)
        print("TERM", pid, cmd)
    print(pid, ppid, cmd)
"""
# Inside the container: every process but this one, as "PID CMDLINE".
LIST_PROCESSES = """
import os
me = os.getpid()
for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit()):
    if pid == me:
        continue
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode().strip()
    except OSError:
        continue
    print(pid, cmd)
"""
# What may stay in the container after the job: PID 1 (tini) and the `sleep` it runs.
KEPT = re.compile(r"^1 /usr/bin/tini|^\d+ sleep infinity$")


def _first_epoch_done(run_dir: Path) -> bool:
    """Rank 0 appends a line to metrics.jsonl after each epoch (what prints ``val_acc``)."""
    metrics = run_dir / "metrics.jsonl"
    return metrics.is_file() and metrics.stat().st_size > 0


def _mounted_run_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    chown_to_image_user(data)
    return data


def test_podman_stop_ends_training_with_a_checkpoint(image: BuiltImage, containers: Containers,
                                                      tmp_path: Path) -> None:
    data = _mounted_run_dir(tmp_path)
    run = data / "run"
    job = containers.start("stop", "--network", "none", "-v", f"{data}:/data", image.name,
                           *ENDLESS, "--run-dir", "/data/run")
    name = containers.name("stop")
    wait_until(lambda: _first_epoch_done(run), job, START_TIMEOUT_S,
               "training in the container did not finish an epoch", interval=1)

    started = time.monotonic()
    stopped = podman("stop", "-t", str(STOP_GRACE_S), name, timeout=STOP_GRACE_S + 60)
    took = time.monotonic() - started
    done = finish(job, 60)
    out = done.stdout + done.stderr
    code = podman("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip()
    exits = sorted(p.name for p in (run / "ranks").glob("rank-*.exit.json"))
    saved = sorted(p.name for p in (run / "checkpoints").glob("epoch-*.ckpt"))
    facts = (f"podman stop exited {stopped.returncode} after {took:.1f} s (grace {STOP_GRACE_S} "
             f"s); container exit {code} (podman run: {done.returncode}); exit records {exits}; "
             f"checkpoints {saved}\n{out[-3000:]}")
    assert code == str(ExitCode.STOPPED) and done.returncode == ExitCode.STOPPED, \
        f"expected exit {ExitCode.STOPPED} (stopped with a checkpoint): {facts}"
    assert took < STOP_GRACE_S, f"the job needed the runtime's SIGKILL: {facts}"
    assert len(exits) == 2, f"both ranks should have ended by themselves: {facts}"
    assert saved, f"no checkpoint written on stop: {facts}"
    assert "SIGTERM received: every rank stops" in out, f"no stop announcement: {facts}"
    assert re.search(r"stopped on SIG.* at epoch", out), f"no 'stopped on SIG.. at epoch': {facts}"
    note(f"podman stop: exit {code} {took:.1f} s after podman stop (grace {STOP_GRACE_S} s); "
         f"both ranks wrote exit records; checkpoints {saved}")


def test_sigterm_to_the_job_leaves_nothing_behind(image: BuiltImage, containers: Containers,
                                                  tmp_path: Path) -> None:
    """What ``podman stop`` cannot show (the kernel clears a container whose PID 1 ended):
    SIGTERM to the job while PID 1 stays up, then list what is left. Only tini and its
    ``sleep`` may remain."""
    data = _mounted_run_dir(tmp_path)
    run = data / "run"
    started = containers.run("procs", "-d", "--network", "none", "-v", f"{data}:/data",
                             "--entrypoint", "/usr/bin/tini", image.name, "--",
                             "sleep", "infinity", timeout=120)
    assert started.returncode == 0, f"podman run -d exited {started.returncode}: {started.stderr}"
    name = containers.name("procs")
    job = containers.exec("procs", "hvdtrain-entrypoint", *ENDLESS, "--run-dir", "/data/run")
    wait_until(lambda: _first_epoch_done(run), job, START_TIMEOUT_S,
               "training (podman exec) did not finish an epoch", interval=1)

    before = podman("exec", name, "python3", "-c", TERM_THE_JOB)
    assert "TERM " in before.stdout, f"found no job to send SIGTERM to:\n{before.stdout}"
    wait_until(lambda: job.poll() is not None, job, STOP_GRACE_S,
               f"the job was still running {STOP_GRACE_S} s after SIGTERM", interval=0.5)
    done = finish(job, 60)

    def leftovers() -> list[str]:
        listed = podman("exec", name, "python3", "-c", LIST_PROCESSES).stdout.splitlines()
        return [line for line in listed if not KEPT.search(line)]

    deadline = time.monotonic() + 5  # processes that were killed take a moment to go
    while (left := leftovers()) and time.monotonic() < deadline:
        time.sleep(0.5)
    job_processes = [line for line in before.stdout.splitlines()
                     if re.search(r"python|mpirun|orted", line)]
    assert done.returncode == ExitCode.STOPPED, (
        f"the job exited {done.returncode}, expected {ExitCode.STOPPED} (stopped with a "
        f"checkpoint)\n{(done.stdout + done.stderr)[-3000:]}")
    assert left == [], f"left in the container after the job ended: {left}\nbefore:\n" \
        f"{before.stdout}"
    note(f"SIGTERM to the job ({len(job_processes)} job processes): exit {done.returncode}, "
         f"nothing left but PID 1 and its sleep")
