"""``hvdtrain preflight`` against real ssh hosts (network namespaces, tests/helpers/).

Two good hosts pass, MPI allreduce included, and their run directory under the private tmpfs is
reported as not shared. Each bad input (a host whose sshd is stopped, a name that does not
resolve, a key ssh refuses, a host without hvdtrain, a Python missing on a host) ends well
within 30 s with one failure line naming the host and the fix, and leaves no process behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from hvdtrain.cluster.hosts import parse_hostfile_text
from hvdtrain.cluster.planning import PlacementRequest, make_plan
from hvdtrain.launch.preflight.run import run_preflight
from tests.helpers.jobs import PYTHON, REPO, clean_env
from tests.helpers.namespace_lab import NamespaceHosts

pytestmark = pytest.mark.multihost

VENV_PYTHON = Path(PYTHON)
FAST_S = 30.0  # the limit for every bad-input case


def preflight(
    *args: str, python: Path = VENV_PYTHON, timeout: float = 240, cwd: Path | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    env = clean_env(("HVDTRAIN_", "SLURM_"), drop=["PYTHONPATH"])
    start = time.monotonic()
    out = subprocess.run(
        [str(python), "-m", "hvdtrain", "preflight", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )
    return out, time.monotonic() - start


def fail_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("FAIL ")]


def assert_nothing_left(lab: NamespaceHosts, within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while any((left := lab.processes()).values()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(left.values()), f"left on the hosts: {left}"


@pytest.fixture
def hostfile(tmp_path: Path, namespace_hosts: NamespaceHosts) -> Path:
    path = tmp_path / "hosts.txt"
    path.write_text("".join(f"{host} slots=1\n" for host in namespace_hosts.hosts))
    return path


@pytest.fixture
def run_dir(namespace_hosts: NamespaceHosts) -> str:
    return str(namespace_hosts.private_dir / "preflight-run")


def test_two_hosts_pass_with_mpi_and_an_unshared_run_dir(
    namespace_hosts: NamespaceHosts, hostfile: Path, run_dir: str
) -> None:
    out, _ = preflight("--hostfile", str(hostfile), "--run-dir", run_dir, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] and report["passed_hosts"] == list(namespace_hosts.hosts)
    checks = {(c["host"], c["check"]): c for c in report["checks"]}
    assert "= 3 (expected 3)" in checks[("all", "mpi-allreduce")]["detail"]
    assert "hvdh1,hvdh2" in checks[("all", "mpi-allreduce")]["detail"]
    assert report["shared"] == {"hvdh1": False, "hvdh2": False}
    for host in namespace_hosts.hosts:
        assert checks[(host, "shared")]["detail"].startswith("NOT shared")
        assert checks[(host, "network")]["detail"].startswith(namespace_hosts.subnet)
        assert f"hostname {host}" in checks[(host, "ssh")]["detail"]
        # the probe removed what it created in the host's private run directory
        ls = namespace_hosts.ssh(host, f"ls -A {namespace_hosts.private_dir}", timeout=30)
        assert ls.stdout.split() == []
    assert_nothing_left(namespace_hosts)


def test_host_with_sshd_stopped_fails_fast_and_is_left_out_of_the_good_hostfile(
    namespace_hosts: NamespaceHosts, hostfile: Path, run_dir: str, tmp_path: Path
) -> None:
    good = tmp_path / "good-hosts.txt"
    namespace_hosts.stop_sshd("hvdh2")
    try:
        out, took = preflight(
            "--hostfile", str(hostfile), "--run-dir", run_dir, "--write-good-hostfile", str(good)
        )
    finally:
        namespace_hosts.start_sshd("hvdh2")
    assert out.returncode == 5, out.stdout + out.stderr
    assert took < FAST_S
    assert fail_lines(out.stdout) == [
        "FAIL hvdh2: ssh: sshd not reachable: connection refused; "
        "fix: start sshd on hvdh2 (or set its port in ~/.ssh/config)"
    ]
    assert "MPI allreduce smoke test not run" in out.stdout
    assert [h.name for h in parse_hostfile_text(good.read_text()).hosts] == ["hvdh1"]
    assert_nothing_left(namespace_hosts)


def test_name_that_does_not_resolve_fails_fast(
    namespace_hosts: NamespaceHosts, run_dir: str
) -> None:
    out, took = preflight("--hosts", "hvdh1:1,nohost.invalid:1", "--run-dir", run_dir)
    assert out.returncode == 5, out.stdout + out.stderr
    assert took < FAST_S
    [line] = fail_lines(out.stdout)
    assert line.startswith("FAIL nohost.invalid: resolve: nohost.invalid does not resolve")
    assert "fix: fix the name in the hostfile, or add nohost.invalid to DNS or /etc/hosts" in line
    assert_nothing_left(namespace_hosts)


def test_key_that_ssh_refuses_fails_fast_without_a_password_prompt(
    namespace_hosts: NamespaceHosts, run_dir: str
) -> None:
    # Without the lab's config ssh offers no key the hosts accept (and would ask for a
    # password without BatchMode).
    ssh = ["ssh", "-F", "/dev/null", "-o", "StrictHostKeyChecking=no",
           "-o", "UserKnownHostsFile=/dev/null"]  # fmt: skip
    plan = make_plan(PlacementRequest(hosts="hvdh1:1"))
    start = time.monotonic()
    report = run_preflight(plan, run_dir, timeout=20, ssh=ssh)
    assert time.monotonic() - start < FAST_S
    [failure] = report.failures
    assert (failure.host, failure.check) == ("hvdh1", "ssh")
    assert "refused the key" in failure.detail
    assert "ssh-copy-id hvdh1" in failure.fix
    assert_nothing_left(namespace_hosts)


def test_host_without_hvdtrain_and_host_without_the_python(
    namespace_hosts: NamespaceHosts, run_dir: str
) -> None:
    # A venv path that exists on the launcher only (the private dir is a different tmpfs on
    # each host); hvdh1 gets a bare Python at that path, without hvdtrain; hvdh2 gets nothing.
    venv = namespace_hosts.private_dir / "launcher-venv"
    base = Path(os.path.realpath(VENV_PYTHON))
    (venv / "bin").mkdir(parents=True)
    try:
        (venv / "bin" / "python").symlink_to(base)
        (venv / "lib").symlink_to(REPO / ".venv" / "lib")
        shutil.copy(REPO / ".venv" / "pyvenv.cfg", venv / "pyvenv.cfg")
        namespace_hosts.ssh(
            "hvdh1",
            f"mkdir -p {venv}/bin && ln -s {base} {venv}/bin/python",
            timeout=30,
            check=True,
        )
        out, took = preflight(
            "--hosts",
            "hvdh1:1,hvdh2:1",
            "--run-dir",
            run_dir,
            python=venv / "bin" / "python",
            cwd=Path("/"),
        )
    finally:
        shutil.rmtree(venv, ignore_errors=True)
        namespace_hosts.ssh("hvdh1", f"rm -rf {venv}", timeout=30)
    assert out.returncode == 5, out.stdout + out.stderr
    assert took < FAST_S
    python = venv / "bin" / "python"
    assert fail_lines(out.stdout) == [
        f"FAIL hvdh1: hvdtrain: hvdtrain is not installed for {python} on hvdh1; fix: install "
        f"it on hvdh1: {python} -m pip install hvdtrain (the same version and path as here)",
        f"FAIL hvdh2: python: {python} does not exist on hvdh2; fix: install the same "
        "environment at the same path on hvdh2 (ranks start with the launcher's interpreter "
        "path)",
    ]
    assert_nothing_left(namespace_hosts)
