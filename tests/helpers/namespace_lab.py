"""Real hosts on one machine: network namespaces with their own sshd (scripts/netns_hosts.sh).

Shared by tests/multihost and tests/slurm (tests/helpers/slurm_lab.py): the fixture is registered
once, from tests/conftest.py, so both directories in one pytest session share one lab (two
definitions would be two session fixtures, and the second would wait forever for the lock the
first one holds).

The session fixture ``namespace_hosts`` brings up two hosts, hvdh1 and hvdh2 (10.231.0.11 and
.12 on the bridge hvdbr0 = 10.231.0.1/24), each with its own hostname and its own empty tmpfs
over the private directory, reachable with plain ``ssh hvdhK`` (so also by mpirun/horovodrun).
It always tears the lab down again: as a finalizer (which pytest also runs after Ctrl-C), from
``atexit``, and on SIGTERM; and the teardown fails loudly if anything of the lab is left.

Needs root and permission to create network namespaces; otherwise the tests are skipped.
Traffic goes only to loopback and to the namespaces' own addresses.

The lab's names are fixed, so two pytest sessions must not run it at once: the fixture holds an
exclusive lock (``LAB_LOCK``) for its whole life; a second session waits for it (up to
``LOCK_WAIT_S``) instead of tearing down the first one's hosts.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.jobs import REPO
from tests.helpers.teardown import register_teardown

SCRIPT = REPO / "scripts" / "netns_hosts.sh"
STATE_DIR = Path("/tmp/hvdtrain-netns")
PRIVATE_DIR = Path("/tmp/hvdtrain-private")
N_HOSTS = 2
BRIDGE = "hvdbr0"
BRIDGE_ADDRESS = "10.231.0.1"
SUBNET = "10.231.0.0/24"
MAX_HOSTS = 3  # the script's limit; teardown checks all of them
LAB_LOCK = Path("/tmp/hvdtrain-lab.lock")
LOCK_WAIT_S = 3600

# Bringing the lab up may first apt-get install openssh-server: generous on a busy 2-core box.
UP_TIMEOUT_S = 900
DOWN_TIMEOUT_S = 180


def _run(cmd: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


@dataclass(frozen=True)
class NamespaceHosts:
    """The running lab. ``hosts[i]`` has address ``addresses[i]``."""

    hosts: tuple[str, ...]
    addresses: tuple[str, ...]
    private_dir: Path
    state_dir: Path
    bridge: str = BRIDGE
    bridge_address: str = BRIDGE_ADDRESS
    subnet: str = SUBNET

    @property
    def ssh_config(self) -> Path:
        """The fixture's ssh client config (also Included from /root/.ssh/config)."""
        return self.state_dir / "ssh_config"

    def ssh(
        self, host: str, command: str | Sequence[str], timeout: float = 60.0, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` on ``host`` over ssh (a string goes to the remote shell as is; a
        sequence is quoted). Raises subprocess.TimeoutExpired after ``timeout`` seconds."""
        remote = command if isinstance(command, str) else shlex.join(command)
        result = _run(["ssh", "-F", str(self.ssh_config), host, remote], timeout)
        if check and result.returncode != 0:
            raise AssertionError(
                f"ssh {host} {remote!r} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def processes(self, include_sshd_listener: bool = False) -> dict[str, list[str]]:
        """Per host, the processes running in its namespace as "PID COMMAND LINE", without
        the host's sshd listener unless asked. Empty lists = nothing left behind."""
        left: dict[str, list[str]] = {}
        for host in self.hosts:
            listener = _read(self.state_dir / f"sshd_{host}.pid").strip()
            out = _run(["ip", "netns", "pids", host], timeout=30).stdout.split()
            procs = []
            for pid in out:
                if pid == listener and not include_sshd_listener:
                    continue
                cmdline = _read(Path("/proc", pid, "cmdline")).replace("\0", " ").strip()
                if cmdline or Path("/proc", pid).exists():
                    procs.append(f"{pid} {cmdline}")
            left[host] = procs
        return left

    def stop_sshd(self, host: str) -> None:
        """Make ``host`` unreachable over ssh (its namespace and address stay)."""
        _script("stop-sshd", host.removeprefix("hvdh"), timeout=60)

    def start_sshd(self, host: str) -> None:
        """Start ``host``'s sshd again (with a fresh, empty private tmpfs)."""
        _script("start-sshd", host.removeprefix("hvdh"), timeout=120)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    result = _run(["bash", str(SCRIPT), *args, "--state-dir", str(STATE_DIR)], timeout)
    if result.returncode != 0:
        raise RuntimeError(
            f"netns_hosts.sh {' '.join(args)} exited {result.returncode}\n"
            f"{result.stdout}{result.stderr}"
        )
    return result


def lab_leftovers() -> list[str]:
    """Everything of the lab that exists right now (empty after a complete teardown)."""
    left = []
    netns = _run(["ip", "netns", "list"], timeout=30).stdout.split()
    left += [f"namespace {h}" for h in (f"hvdh{k}" for k in range(1, MAX_HOSTS + 1)) if h in netns]
    links = _run(["ip", "-o", "link", "show"], timeout=30).stdout
    for name in [BRIDGE, *(f"hvdv{k}" for k in range(1, MAX_HOSTS + 1))]:
        if f": {name}:" in links or f": {name}@" in links:
            left.append(f"link {name}")
    if "# hvdtrain-netns begin" in _read(Path("/etc/hosts")).splitlines():
        left.append("/etc/hosts block")
    include = f"Include {STATE_DIR}/ssh_config"
    if include in _read(Path("/root/.ssh/config")).splitlines():
        left.append(f"/root/.ssh/config line {include!r}")
    if STATE_DIR.exists():
        left.append(f"state dir {STATE_DIR}")
    for proc in Path("/proc").glob("[0-9]*/cmdline"):
        if f"{STATE_DIR}/sshd_" in _read(proc).replace("\0", " "):
            left.append(f"sshd process {proc.parent.name}")
    return left


def _lab_down() -> None:
    """`netns_hosts.sh down`, then fail loudly if anything of the lab is left."""
    # Own session: a second Ctrl-C in the terminal must not kill the teardown itself.
    proc = subprocess.Popen(
        ["bash", str(SCRIPT), "down", "--state-dir", str(STATE_DIR)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    while True:
        try:
            out, _ = proc.communicate(timeout=DOWN_TIMEOUT_S)
            break
        except KeyboardInterrupt:
            continue  # finish tearing down first
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            raise RuntimeError(f"netns_hosts.sh down timed out:\n{out}") from None
    left = lab_leftovers()
    if proc.returncode != 0 or left:
        raise RuntimeError(
            f"netns_hosts.sh down exited {proc.returncode}; left behind: {left}\n{out}"
        )


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "multihost lab needs root (network namespaces, /etc/hosts, /root/.ssh/config)"
    # A throwaway namespace tells whether this machine lets us create them at all.
    probe = f"hvdprobe{os.getpid()}"
    try:
        added = _run(["ip", "netns", "add", probe], timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns` is not usable here: {exc}"
    if added.returncode != 0:
        return f"`ip netns add` is not permitted here: {added.stderr.strip()}"
    _run(["ip", "netns", "del", probe], timeout=30)
    return None


def _hold_lab_lock(request: pytest.FixtureRequest) -> None:
    """Wait for, then hold until the session ends, the one lab's lock."""
    handle = LAB_LOCK.open("a")
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                pytest.fail(f"another test session held the lab lock {LAB_LOCK} for "
                            f"{LOCK_WAIT_S} s")
            time.sleep(2)
    request.addfinalizer(handle.close)  # closing the file releases the lock


@pytest.fixture(scope="session")
def namespace_hosts(request: pytest.FixtureRequest) -> Iterator[NamespaceHosts]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)

    _hold_lab_lock(request)
    # Once, however the session ends (finalizer, atexit, SIGTERM); registered before `up`
    # runs, so a half-built lab (or Ctrl-C during up) is removed too.
    register_teardown(request, _lab_down)

    try:
        # From a clean slate: a lab left up by hand would carry files in its private dirs.
        _script("down", timeout=DOWN_TIMEOUT_S)
        up = _run(
            [
                "bash", str(SCRIPT), "up", str(N_HOSTS),
                "--private-dir", str(PRIVATE_DIR), "--state-dir", str(STATE_DIR),
            ],
            timeout=UP_TIMEOUT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"netns_hosts.sh did not finish within its timeout: {exc.stdout!r}")
    if up.returncode != 0:
        pytest.fail(f"netns_hosts.sh up {N_HOSTS} exited {up.returncode}:\n{up.stdout}{up.stderr}")

    hosts = tuple(f"hvdh{k}" for k in range(1, N_HOSTS + 1))
    yield NamespaceHosts(
        hosts=hosts,
        addresses=tuple(f"10.231.0.{10 + k}" for k in range(1, N_HOSTS + 1)),
        private_dir=PRIVATE_DIR,
        state_dir=STATE_DIR,
    )
