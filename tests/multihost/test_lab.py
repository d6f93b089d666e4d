"""The multi-host lab itself works: what later multi-host hvdtrain tests rely on.

Each namespace host answers ssh under its own hostname, has its own empty private directory,
sees the shared venv, can be driven by mpirun over the bridge, and fails fast (no hang) when
its sshd is stopped or its link is down. The fixture's teardown checks nothing is left.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.jobs import PYTHON
from tests.helpers.namespace_lab import NamespaceHosts, lab_leftovers

pytestmark = pytest.mark.multihost

VENV_PYTHON = Path(PYTHON)
# Keep OpenMPI's out-of-band and TCP transports on the lab's subnet. An interface *name*
# (hvdbr0) does not work: mpirun forwards it to the hosts, whose interface is eth0.
MPI_NET = ["-mca", "oob_tcp_if_include", "10.231.0.0/24", "-mca", "btl_tcp_if_include",
           "10.231.0.0/24"]  # fmt: skip


def run(cmd: list[str], timeout: float, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw
    )  # type: ignore[call-overload]


def wait_no_processes(lab: NamespaceHosts, within_s: float = 15.0) -> dict[str, list[str]]:
    """Poll until no process (but the sshd listener) runs in any host; return what is left."""
    deadline = time.monotonic() + within_s
    while True:
        left = lab.processes()
        if not any(left.values()) or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def test_each_host_answers_with_its_own_hostname(namespace_hosts: NamespaceHosts) -> None:
    for host, address in zip(namespace_hosts.hosts, namespace_hosts.addresses):
        # By name and by address: mpirun may hand ssh either.
        for target in (host, address):
            out = namespace_hosts.ssh(target, "hostname", timeout=30, check=True).stdout
            assert out.strip() == host
    # The hostname lives in each sshd's own UTS namespace: the launcher's is untouched.
    assert not socket.gethostname().startswith("hvdh")


def test_plain_ssh_uses_the_included_config(namespace_hosts: NamespaceHosts) -> None:
    # No -F: this is the path mpirun and horovodrun take (~/.ssh/config Include, /etc/hosts).
    for host in namespace_hosts.hosts:
        out = run(["ssh", host, "hostname"], timeout=30)
        assert (out.returncode, out.stdout.strip()) == (0, host), out.stderr


def test_hosts_reach_each_other_over_ssh(namespace_hosts: NamespaceHosts) -> None:
    # Host to host, as OpenMPI's tree spawn does with more hosts.
    first, second = namespace_hosts.hosts[:2]
    out = namespace_hosts.ssh(first, f"ssh {second} hostname", timeout=60, check=True)
    assert out.stdout.strip() == second


def test_private_dir_starts_empty_on_each_host(namespace_hosts: NamespaceHosts) -> None:
    private = namespace_hosts.private_dir
    for host in namespace_hosts.hosts:
        out = namespace_hosts.ssh(
            host, f"findmnt -n -o FSTYPE {private} && ls -A {private}", timeout=30, check=True
        )
        assert out.stdout.split() == ["tmpfs"], f"{host}: {out.stdout!r}"


def test_private_dir_is_not_shared(namespace_hosts: NamespaceHosts) -> None:
    first, second = namespace_hosts.hosts[:2]
    marker = namespace_hosts.private_dir / "written-on-hvdh1"
    namespace_hosts.ssh(first, f"echo {first} > {marker}", timeout=30, check=True)
    try:
        assert namespace_hosts.ssh(first, f"cat {marker}", timeout=30).stdout.strip() == first
        assert namespace_hosts.ssh(second, f"test -e {marker}", timeout=30).returncode == 1
        assert not marker.exists(), "the host's private dir leaked onto the root filesystem"
        # A second session into the same host sees the same tmpfs (one per sshd, not per login).
        assert namespace_hosts.ssh(first, f"test -e {marker}", timeout=30).returncode == 0
    finally:
        namespace_hosts.ssh(first, f"rm -f {marker}", timeout=30)


def test_venv_horovod_imports_on_every_host(namespace_hosts: NamespaceHosts) -> None:
    if run([str(VENV_PYTHON), "-c", "import horovod"], timeout=300).returncode != 0:
        pytest.skip(f"Horovod is not installed in {VENV_PYTHON} (run scripts/setup.sh)")
    code = "import horovod, socket; print(socket.gethostname(), horovod.__version__)"
    for host in namespace_hosts.hosts:
        out = namespace_hosts.ssh(host, [str(VENV_PYTHON), "-c", code], timeout=300, check=True)
        assert out.stdout.split()[0] == host


needs_mpirun = pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun not installed")


@needs_mpirun
def test_mpirun_starts_one_rank_per_host(namespace_hosts: NamespaceHosts, tmp_path: Path) -> None:
    first, second = namespace_hosts.hosts[:2]
    cmd = ["mpirun", "--allow-run-as-root", "-np", "2", "-H", f"{first}:1,{second}:1", "hostname"]
    out = run(cmd, timeout=180, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert sorted(out.stdout.split()) == [first, second]
    assert wait_no_processes(namespace_hosts) == {h: [] for h in namespace_hosts.hosts}


@needs_mpirun
def test_mpi_allreduce_over_the_bridge(namespace_hosts: NamespaceHosts, tmp_path: Path) -> None:
    if run([str(VENV_PYTHON), "-c", "import mpi4py"], timeout=120).returncode != 0:
        pytest.skip("mpi4py is not installed in the venv")
    first, second = namespace_hosts.hosts[:2]
    code = (
        "from mpi4py import MPI; import socket; c = MPI.COMM_WORLD; "
        "print(socket.gethostname(), c.rank, c.allreduce(c.rank + 1), flush=True)"
    )
    cmd = ["mpirun", "--allow-run-as-root", "-np", "2", "-H", f"{first}:1,{second}:1",
           *MPI_NET, "-mca", "btl", "self,tcp", str(VENV_PYTHON), "-c", code]  # fmt: skip
    out = run(cmd, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = sorted(line.split() for line in out.stdout.splitlines() if line.startswith("hvdh"))
    assert lines == [[first, "0", "3"], [second, "1", "3"]]
    assert wait_no_processes(namespace_hosts) == {h: [] for h in namespace_hosts.hosts}


def test_stopped_sshd_fails_fast(namespace_hosts: NamespaceHosts) -> None:
    host = namespace_hosts.hosts[1]
    namespace_hosts.stop_sshd(host)
    try:
        start = time.monotonic()
        out = run(["ssh", host, "hostname"], timeout=60)  # BatchMode, ConnectTimeout from config
        elapsed = time.monotonic() - start
        assert out.returncode == 255, out.stdout + out.stderr
        assert elapsed < 10, f"ssh to a stopped sshd took {elapsed:.1f} s"
    finally:
        namespace_hosts.start_sshd(host)
    assert namespace_hosts.ssh(host, "hostname", timeout=30, check=True).stdout.strip() == host


def test_link_down_fails_fast(namespace_hosts: NamespaceHosts) -> None:
    host = namespace_hosts.hosts[1]
    link = ["ip", "-n", host, "link", "set", "eth0"]
    assert run([*link, "down"], timeout=30).returncode == 0
    try:
        start = time.monotonic()
        out = run(["ssh", host, "hostname"], timeout=60)
        elapsed = time.monotonic() - start
        assert out.returncode == 255, out.stdout + out.stderr
        assert elapsed < 10, f"ssh to a host with its link down took {elapsed:.1f} s"
    finally:
        assert run([*link, "up"], timeout=30).returncode == 0
    # Back up: the neighbour entry recovers within a few seconds.
    deadline = time.monotonic() + 30
    while namespace_hosts.ssh(host, "true", timeout=30).returncode != 0:
        assert time.monotonic() < deadline, f"{host} did not come back after its link went up"
        time.sleep(1)


def test_leftover_check_sees_the_running_lab(namespace_hosts: NamespaceHosts) -> None:
    # The fixture's teardown fails when lab_leftovers() is not empty after `down`; make sure
    # the check would actually notice each part of the lab.
    left = lab_leftovers()
    for part in ("namespace hvdh1", "namespace hvdh2", "link hvdbr0", "link hvdv1",
                 "/etc/hosts block", "state dir"):  # fmt: skip
        assert any(item.startswith(part) for item in left), (part, left)
    assert any(item.startswith("/root/.ssh/config line") for item in left), left
    assert any(item.startswith("sshd process") for item in left), left
