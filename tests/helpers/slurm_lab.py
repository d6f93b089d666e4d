"""A real Slurm cluster on the namespace hosts (scripts/slurm_lab.sh on namespace_lab.py).

The session fixture ``slurm_cluster`` (registered in tests/slurm/conftest.py) installs Slurm
and munge if missing, then starts munged and slurmctld in the root namespace (the "login node",
where sbatch/salloc/srun run) and one slurmd inside each namespace host, so ``-N2`` is two hosts
with their own hostname and address. It stops everything by pid file afterwards, also on
failure (once, by tests/helpers/teardown.py: finalizer, atexit, SIGTERM), and then fails
loudly if any Slurm daemon, step daemon, job or rank process is left.

Needs root (namespace_hosts skips otherwise). Traffic: only the lab's bridge subnet.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.jobs import REPO, VENV_BIN, clean_env, finish, spawn
from tests.helpers.namespace_lab import NamespaceHosts
from tests.helpers.teardown import register_teardown

SCRIPT = REPO / "scripts" / "slurm_lab.sh"
STATE_DIR = Path("/tmp/hvdtrain-slurm")
INSTALL_TIMEOUT_S = 900  # apt-get on a fresh CI machine, a busy 2-core box
UP_TIMEOUT_S = 180
DOWN_TIMEOUT_S = 180
SLURM_DAEMONS = ("slurmctld", "slurmd", "slurmstepd")


def _script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args, "--state-dir", str(STATE_DIR)],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@dataclass(frozen=True)
class Job:
    """One job as ``scontrol show job`` last saw it."""

    job_id: str
    fields: dict[str, str]

    @property
    def state(self) -> str:
        return self.fields.get("JobState", "")

    @property
    def exit_code(self) -> int:
        """The batch script's exit code (``ExitCode=rc:signal``)."""
        return int(self.fields.get("ExitCode", "0:0").split(":")[0])


@dataclass(frozen=True)
class SlurmCluster:
    """The running cluster. Every client command runs with ``env`` (SLURM_CONF, the venv)."""

    lab: NamespaceHosts
    conf: Path
    nodes: tuple[str, ...]

    @property
    def env(self) -> dict[str, str]:
        return clean_env(("HVDTRAIN_", "OMPI_", "HOROVOD_", "SLURM_", "PMI"), path=VENV_BIN,
                         SLURM_CONF=str(self.conf), PYTHONFAULTHANDLER="1")

    def run(self, argv: Sequence[str], timeout: float, cwd: Path | None = None,
            **extra_env: str) -> subprocess.CompletedProcess[str]:
        """Run a client command (sbatch, srun, ...) in its own session; on timeout kill the
        whole group and fail the test with what it printed."""
        proc = spawn(argv, {**self.env, **extra_env}, cwd or REPO, stdin=subprocess.DEVNULL)
        return finish(proc, timeout)

    def sbatch(self, *args: str, cwd: Path | None = None, **extra_env: str) -> str:
        """Submit (the job inherits ``env`` + ``extra_env``); return the job id."""
        done = self.run(["sbatch", "--parsable", *args], timeout=60, cwd=cwd, **extra_env)
        assert done.returncode == 0, f"sbatch {args} failed:\n{done.stderr}"
        return done.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> Job:
        done = self.run(["scontrol", "show", "job", "-o", job_id], timeout=30)
        assert done.returncode == 0, done.stderr
        fields = dict(re.findall(r"(\w+)=(\S*)", done.stdout))
        return Job(job_id, fields)

    def wait_for(self, job_id: str, states: Sequence[str], timeout: float) -> Job:
        """Poll until the job is in one of ``states``; fail with its last state otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job.state in states:
                return job
            if time.monotonic() > deadline:
                pytest.fail(f"job {job_id} still {job.state} after {timeout} s "
                            f"(wanted {'/'.join(states)}): {job.fields}")
            time.sleep(1)

    def wait_requeued(self, job_id: str, timeout: float) -> Job:
        """Poll until the job is pending again after a restart (Restarts >= 1)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job.state == "PENDING" and int(job.fields.get("Restarts", "0")) >= 1:
                return job
            if job.state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") \
                    or time.monotonic() > deadline:
                pytest.fail(f"job {job_id} was not requeued: {job.state} {job.fields}")
            time.sleep(0.5)

    def squeue(self) -> list[str]:
        """Pending and running jobs, one "ID STATE NODES" line each (empty: queue is empty)."""
        done = self.run(["squeue", "-h", "-o", "%i %T %N"], timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    def wait_queue_empty(self, timeout: float = 60) -> list[str]:
        deadline = time.monotonic() + timeout
        while (left := self.squeue()) and time.monotonic() < deadline:
            time.sleep(1)
        return left

    def job_processes(self) -> list[str]:
        """What runs on the hosts besides their sshd and slurmd: step daemons, job scripts,
        launchers, ranks ("HOST: PID COMMAND LINE"; empty = nothing)."""
        daemons = {_read(STATE_DIR / "nodes" / host / "slurmd.pid").strip()
                   for host in self.nodes}
        return [f"{host}: {proc}" for host, procs in self.lab.processes().items()
                for proc in procs if proc.split()[0] not in daemons]

    def wait_idle(self, timeout: float = 60) -> list[str]:
        """Wait until no job is queued and nothing of a job runs on the hosts; return what is
        left after ``timeout`` (empty: idle)."""
        deadline = time.monotonic() + timeout
        while (left := self.squeue() + self.job_processes()) and time.monotonic() < deadline:
            time.sleep(1)
        return left


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def slurm_leftovers(lab: NamespaceHosts) -> list[str]:
    """Slurm daemons, step daemons, munged of this lab, and anything else (jobs, ranks) still
    running on the hosts: empty after a complete teardown."""
    left = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            comm = (proc / "comm").read_text().strip()
            cmdline = (proc / "cmdline").read_text().replace("\0", " ").strip()
        except OSError:
            continue
        if comm in SLURM_DAEMONS or (comm == "munged" and str(STATE_DIR) in cmdline):
            left.append(f"{proc.name} {cmdline or comm}")
    left += [f"on {host}: {p}" for host, procs in lab.processes().items() for p in procs]
    return left


def _stop_cluster(lab: NamespaceHosts, keep_logs: Path) -> None:
    """Stop the cluster; fail if anything of it (or of a job) is left."""
    # The daemons' logs outlive the cluster (pytest's basetemp), for post-mortems.
    for log in STATE_DIR.glob("**/*.log"):
        target = keep_logs / log.relative_to(STATE_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, target)
    try:
        down = _script("down", timeout=DOWN_TIMEOUT_S)
        out = down.stdout + down.stderr
    except subprocess.TimeoutExpired as exc:
        out = f"slurm_lab.sh down timed out: {exc.stdout!r}"
        down = None
    deadline = time.monotonic() + 20  # killed processes take a moment to go
    while (left := slurm_leftovers(lab)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if (down is None or down.returncode != 0) or left:
        raise RuntimeError(f"Slurm lab teardown: left behind {left}\n{out}")


@pytest.fixture(scope="session")
def slurm_cluster(namespace_hosts: NamespaceHosts, request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    lab = namespace_hosts
    try:
        installed = _script("install", timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"installing Slurm did not finish in {INSTALL_TIMEOUT_S} s: {exc.stdout!r}")
    if installed.returncode != 0:
        pytest.fail(f"installing Slurm failed:\n{installed.stdout}{installed.stderr}")

    keep_logs = tmp_path_factory.mktemp("slurm-logs")
    # Once, however the session ends; registered before `up`, so a half-started cluster is
    # stopped too. pytest runs this finalizer before namespace_hosts' (which removes the
    # hosts), as it depends on it.
    register_teardown(request, lambda: _stop_cluster(lab, keep_logs))
    args = ["up", "--controller-address", lab.bridge_address]
    for host, address in zip(lab.hosts, lab.addresses, strict=True):
        args += ["--node", f"{host}={address}"]
    try:
        _script("down", timeout=DOWN_TIMEOUT_S)  # a clean slate
        up = _script(*args, timeout=UP_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"slurm_lab.sh up did not finish in {UP_TIMEOUT_S} s: {exc.stdout!r}")
    if up.returncode != 0:
        pytest.fail(f"slurm_lab.sh up failed ({up.returncode}):\n{up.stdout}{up.stderr}\n"
                    + _logs())
    yield SlurmCluster(lab=lab, conf=STATE_DIR / "slurm.conf", nodes=lab.hosts)


def _logs() -> str:
    """The daemons' last log lines, for a failure message."""
    parts = []
    for log in sorted(STATE_DIR.glob("**/*.log")):
        lines = log.read_text(errors="replace").splitlines()[-15:]
        parts.append(f"--- {log} ---\n" + "\n".join(lines))
    return "\n".join(parts)
