"""``hvdtrain preflight``: the judgement on fake probe results, ssh/probe failures as one line
with a fix, the good hostfile, the probe itself, and a real localhost run end to end."""

from __future__ import annotations

import copy
import importlib
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hvdtrain.cluster.hosts import Host, good_hostfile_text, parse_hostfile_text
from hvdtrain.cluster.planning import PlacementRequest, make_plan
from hvdtrain.commands import main
from hvdtrain.errors import OutputError
from hvdtrain.launch import probe
from hvdtrain.launch.network import is_local
from hvdtrain.launch.preflight import run as pf_run
from hvdtrain.launch.preflight.checks import (
    SMOKE_MARK,
    classify_probe_failure,
    classify_ssh_failure,
    compare,
    network_checks,
    parse_probe_output,
    smoke_result,
)
from hvdtrain.launch.preflight.remote import resolve
from hvdtrain.launch.preflight.report import ALL_HOSTS, HostCheck, PreflightReport
from tests.helpers.jobs import clean_env

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "tensorflow", "horovod", "keras", "numpy")
PY = "/opt/venv/bin/python"

REFERENCE: dict[str, Any] = {
    "hostname": "login",
    "python": "3.11.7",
    "executable": PY,
    "hvdtrain": "0.1.0",
    "hvdtrain_path": "/opt/hvdtrain/hvdtrain",
    "packages": {"horovod": "0.28.1", "torch": "2.13.0+cpu", "tensorflow": "2.21.0",
                 "mpi4py": "4.1.2"},
    "horovod_build": {"frameworks": ["tensorflow", "torch"],
                      "flags": {"mpi": True, "gloo": True, "nccl": False},
                      "built_against": {"pytorch": "2.13.0+cpu", "tensorflow": "2.21.0"}},
    "addresses": [{"interface": "lo", "address": "127.0.0.1", "prefixlen": 8},
                  {"interface": "eth0", "address": "192.0.2.2", "prefixlen": 24},
                  {"interface": "br0", "address": "10.1.0.1", "prefixlen": 24}],
    "run_dir": {"path": "/data/runs", "writable": True, "error": None, "shared": True},
}


def host_probe(**changes: Any) -> dict[str, Any]:
    """A probe result of a host like the launcher, with ``changes`` (dotted keys go deep)."""
    found = copy.deepcopy(REFERENCE)
    found.update(hostname="node1", addresses=[
        {"interface": "lo", "address": "127.0.0.1", "prefixlen": 8},
        {"interface": "eth0", "address": "10.1.0.11", "prefixlen": 24}])
    for key, value in changes.items():
        target = found
        *path, last = key.split(".")
        for part in path:
            target = target[part]
        target[last] = value
    return found


def failures(checks: list[HostCheck]) -> list[HostCheck]:
    return [c for c in checks if not c.ok]


# ---------------------------------------------------------------------------- comparison

def test_identical_host_passes_every_check() -> None:
    checks = compare("node1", REFERENCE, host_probe())
    assert failures(checks) == []
    assert [c.check for c in checks] == ["python", "hvdtrain", "horovod", "torch", "tensorflow",
                                         "mpi4py", "horovod-build", "run-dir", "shared"]
    assert all(c.host == "node1" for c in checks)


def test_version_mismatch_names_both_versions_and_the_fix() -> None:
    [bad] = failures(compare("node1", REFERENCE, host_probe(**{"packages.torch": "2.12.0"})))
    assert (bad.host, bad.check) == ("node1", "torch")
    assert "2.12.0" in bad.detail and "2.13.0+cpu" in bad.detail
    assert "torch==2.13.0+cpu" in bad.fix


def test_missing_package_on_host() -> None:
    [bad] = failures(compare("node1", REFERENCE, host_probe(**{"packages.horovod": None})))
    assert bad.check == "horovod"
    assert "not installed on node1" in bad.detail and "0.28.1" in bad.detail


def test_package_missing_on_the_launcher_too_is_not_compared() -> None:
    reference = copy.deepcopy(REFERENCE)
    reference["packages"]["tensorflow"] = None
    checks = compare("node1", reference, host_probe(**{"packages.tensorflow": None}))
    assert failures(checks) == []
    assert "tensorflow" not in [c.check for c in checks]


def test_python_and_hvdtrain_must_be_the_same_at_the_same_path() -> None:
    found = host_probe(python="3.10.12", hvdtrain_path="/home/me/hvdtrain/hvdtrain")
    bad = {c.check: c for c in failures(compare("node1", REFERENCE, found))}
    assert set(bad) == {"python", "hvdtrain"}
    assert "3.10.12" in bad["python"].detail and "3.11.7" in bad["python"].detail
    assert "/home/me/hvdtrain/hvdtrain" in bad["hvdtrain"].detail
    assert "/opt/hvdtrain/hvdtrain" in bad["hvdtrain"].fix


def test_horovod_build_flags_must_match() -> None:
    found = host_probe(**{"horovod_build.flags": {"mpi": False, "gloo": True, "nccl": False},
                          "horovod_build.frameworks": ["torch"]})
    [bad] = failures(compare("node1", REFERENCE, found))
    assert bad.check == "horovod-build"
    assert "mpi=False (here True)" in bad.detail
    assert "frameworks torch (here tensorflow,torch)" in bad.detail
    assert "rebuild Horovod on node1" in bad.fix


def test_run_dir_not_writable_and_not_shared() -> None:
    unwritable = host_probe(run_dir={"path": "/data/runs", "writable": False,
                                     "error": "Read-only file system: /data", "shared": False})
    [bad] = failures(compare("node1", REFERENCE, unwritable))
    assert bad.check == "run-dir" and "Read-only file system" in bad.detail
    assert "--run-dir" in bad.fix
    private = host_probe(**{"run_dir.shared": False})
    shared = {c.check: c for c in compare("node1", REFERENCE, private)}["shared"]
    assert shared.ok and shared.detail.startswith("NOT shared")


# ------------------------------------------------------------------------------- network

def test_common_subnet_with_the_launcher_and_across_hosts() -> None:
    probes = {"node1": host_probe(),
              "node2": host_probe(addresses=[{"interface": "ens5", "address": "10.1.0.12",
                                              "prefixlen": 24}])}
    checks = network_checks(REFERENCE, probes)
    assert failures(checks) == []
    assert [c.host for c in checks] == ["node1", "node2", ALL_HOSTS]
    assert "10.1.0.0/24 (ens5; here br0)" in checks[1].detail
    assert "btl_tcp_if_include 10.1.0.0/24" in checks[2].detail


def test_host_without_a_subnet_in_common_fails() -> None:
    probes = {"node1": host_probe(addresses=[{"interface": "eth0", "address": "172.16.5.5",
                                              "prefixlen": 16}])}
    [bad] = failures(network_checks(REFERENCE, probes))
    assert (bad.host, bad.check) == ("node1", "network")
    assert "172.16.0.0/16" in bad.detail and "10.1.0.0/24" in bad.detail


def test_network_not_checked_without_ip_command() -> None:
    [check] = network_checks(REFERENCE, {"node1": host_probe(addresses=None)})
    assert check.ok and "not checked" in check.detail


# ------------------------------------------------------------------- ssh and probe failures

@pytest.mark.parametrize(("rc", "stderr", "check", "detail", "fix"), [
    (255, "root@n1: Permission denied (publickey,password).", "ssh", "refused the key",
     "ssh-copy-id n1"),
    (255, "ssh: connect to host n1 port 22: Connection refused", "ssh", "connection refused",
     "start sshd on n1"),
    (255, "ssh: connect to host n1 port 22: Connection timed out", "ssh", "not reachable",
     "n1 is up"),
    (255, "ssh: connect to host n1 port 22: No route to host", "ssh", "not reachable",
     "n1 is up"),
    (255, "ssh: Could not resolve hostname n1: Name or service not known", "resolve",
     "does not resolve", "/etc/hosts"),
    (255, "Host key verification failed.", "ssh", "host key", "ssh-keyscan n1"),
    (None, "", "ssh", "no answer over ssh within 20 s", "--timeout"),
    (255, "kex_exchange_identification: banner line contains invalid characters", "ssh",
     "banner line", "ssh -o BatchMode=yes n1 true"),
])
def test_ssh_failures_become_one_line_with_a_fix(rc: int | None, stderr: str, check: str,
                                                 detail: str, fix: str) -> None:
    found = classify_ssh_failure("n1", rc, stderr, 20)
    assert (found.host, found.check, found.ok) == ("n1", check, False)
    assert detail in found.detail and fix in found.fix
    assert "\n" not in found.failure_line()


@pytest.mark.parametrize(("rc", "stdout", "stderr", "check", "detail"), [
    (127, "", f"bash: line 1: {PY}: No such file or directory", "python", "does not exist"),
    (1, "", f"{PY}: Error while finding module specification for 'hvdtrain.launch.probe' "
     "(ModuleNotFoundError: No module named 'hvdtrain')", "hvdtrain", "not installed"),
    (1, "", f"{PY}: No module named hvdtrain.launch.probe", "hvdtrain", "older"),
    (0, "Welcome to node1!\n", "", "probe", "printed no result"),
    (1, "", "Traceback ...\nOSError: [Errno 28] No space left on device", "probe",
     "No space left"),
])
def test_probe_failures(rc: int, stdout: str, stderr: str, check: str, detail: str) -> None:
    found = classify_probe_failure("n1", rc, stdout, stderr, PY)
    assert (found.check, found.ok) == (check, False)
    assert detail in found.detail and found.fix


def test_probe_output_is_found_behind_banners() -> None:
    line = json.dumps(host_probe())
    assert parse_probe_output(f"motd\n{{not json\n{line}\n") == host_probe()
    assert parse_probe_output("nothing here\n") is None


def test_smoke_result() -> None:
    good = f'{SMOKE_MARK} {{"sum": 10, "size": 4, "hosts": ["a", "a", "b", "b"]}}'
    assert smoke_result(f"noise\n{good}\n", 4) == (
        True, "allreduce of rank+1 over 4 ranks on a,b = 10 (expected 10)")
    wrong = f'{SMOKE_MARK} {{"sum": 6, "size": 3, "hosts": ["a"]}}'
    assert smoke_result(wrong, 4)[0] is False
    assert smoke_result("", 2) == (False, "rank 0 printed no result")


def test_mpi_smoke_test_without_mpirun_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pf_run, "detect_mpi_flavour", lambda: None)
    plan = make_plan(PlacementRequest(hosts="localhost:2"))
    found = pf_run.mpi_smoke_test(plan, 10)
    assert (found.check, found.ok) == ("mpi-allreduce", False)
    assert "--no-mpi" in found.fix


# ----------------------------------------------------------------------------- local I/O

def test_is_local() -> None:
    assert is_local("localhost") and is_local("127.0.0.1")
    assert is_local("node7", hostname="node7.cluster") and is_local(socket.gethostname())
    assert not is_local("node8", hostname="node7")


def test_resolution_gives_up_at_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def stuck(*args: Any, **kw: Any) -> Any:
        release.wait(30)
        raise socket.gaierror("released")

    monkeypatch.setattr(socket, "getaddrinfo", stuck)
    start = time.monotonic()
    try:
        addresses, error = resolve("slow.example", 0.3)
    finally:
        release.set()
    assert addresses == [] and error is not None and "no answer" in error
    assert time.monotonic() - start < 5


def test_name_under_invalid_does_not_resolve() -> None:
    addresses, error = resolve("nohost.invalid", 20)
    assert addresses == [] and error


def test_probe_run_dir_is_created_checked_and_removed(tmp_path: Path) -> None:
    run_dir = tmp_path / "a" / "b" / "runs"
    status = probe.run_dir_status(str(run_dir))
    assert status["writable"] and status["error"] is None and status["shared"] is None
    assert list(tmp_path.iterdir()) == []  # what the probe created, it removed
    (tmp_path / "marker").write_text("x")
    assert probe.run_dir_status(str(tmp_path), "marker")["shared"] is True
    assert probe.run_dir_status(str(tmp_path), "other-marker")["shared"] is False
    (tmp_path / "file").write_text("x")
    bad = probe.run_dir_status(str(tmp_path / "file" / "runs"))
    assert not bad["writable"] and "file" in bad["error"]


def test_probe_prints_one_json_line(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "hvdtrain.launch.probe", "--run-dir",
                          str(tmp_path / "runs"), "--deadline", "60"], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    [line] = out.stdout.splitlines()
    found = json.loads(line)
    assert found["executable"] == sys.executable
    assert found["hvdtrain_path"] == str(REPO / "hvdtrain")
    assert found["run_dir"]["writable"] is True
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------- the good hostfile

def test_good_hostfile_keeps_only_passed_hosts_as_planned() -> None:
    hosts = [Host("a", 2, (0, 1)), Host("b", 2, (0, 3), max_slots=4), Host("c", 1, (0,))]
    text = good_hostfile_text(hosts, ["b", "c"])
    parsed = parse_hostfile_text(text)
    assert parsed.problems == []
    assert parsed.hosts == [Host("b", 2, (0, 3), 4), Host("c", 1, (0,))]
    assert parse_hostfile_text(good_hostfile_text(hosts, [])).hosts == []


# ------------------------------------------------------------------ orchestration and CLI

def test_run_preflight_skips_mpi_when_a_host_fails(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    def fake_remote(host: str, run_dir: str, marker: str | None, timeout: float,
                    ssh: Any = None) -> tuple[list[HostCheck], dict[str, Any] | None]:
        assert marker and (Path(run_dir) / marker).exists()  # the launcher's marker is there
        if host == "down":
            return [classify_ssh_failure(host, 255, "Connection refused", timeout)], None
        local = probe.collect(run_dir, None)  # this machine, but the run dir "not shared"
        local["run_dir"]["shared"] = False
        return [HostCheck(host, "resolve", True, "10.0.0.1")], local

    monkeypatch.setattr(pf_run, "probe_remote", fake_remote)
    monkeypatch.setattr(pf_run, "mpi_smoke_test", lambda *a, **k: pytest.fail("must not run"))
    plan = make_plan(PlacementRequest(hosts="up:1,down:1"))
    run_dir = tmp_path / "new" / "runs"
    report = pf_run.run_preflight(plan, run_dir, timeout=30)
    assert not report.ok
    assert [c.failure_line() for c in report.failures] == [
        "down: ssh: sshd not reachable: connection refused; fix: start sshd on down (or set "
        "its port in ~/.ssh/config)"]
    assert report.passed_hosts() == ["up"]
    assert report.shared == {"up": False}
    assert any("not run" in note for note in report.notes)
    assert [c.host for c in report.checks][-1] == "down"  # grouped by host, in plan order
    assert not (tmp_path / "new").exists()  # the marker and the dirs made for it are gone


def test_cli_failure_exits_5_and_writes_the_good_hostfile(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    command = importlib.import_module("hvdtrain.commands.preflight")  # not the Click command
    def fake(plan: Any, run_dir: Path, timeout: float, **kw: Any) -> PreflightReport:
        assert timeout == 7.0 and kw == {"mpi_smoke": False}
        return PreflightReport(("a", "b"), str(run_dir), (
            HostCheck("a", "ssh", True, "BatchMode ok"),
            HostCheck("b", "ssh", False, "sshd not reachable: connection refused",
                      "start sshd on b")), {}, ("MPI allreduce smoke test skipped (--no-mpi)",))

    monkeypatch.setattr(command, "run_preflight", fake)
    good = tmp_path / "good"
    result = CliRunner().invoke(main, ["preflight", "-H", "a:2,b:1", "--timeout", "7",
                                       "--no-mpi", "--write-good-hostfile", str(good)])
    assert result.exit_code == 5, result.output
    assert "FAIL b: ssh: sshd not reachable: connection refused; fix: start sshd on b" \
        in result.output
    assert parse_hostfile_text(good.read_text()).hosts == [Host("a", 2, (0, 1))]
    assert [p.name for p in tmp_path.iterdir()] == ["good"]  # written atomically: no temporary
    nowhere = CliRunner().invoke(main, ["preflight", "-H", "a:2,b:1", "--timeout", "7",
                                        "--no-mpi", "--write-good-hostfile",
                                        str(tmp_path / "no-such-dir" / "good")])
    assert nowhere.exit_code == OutputError.exit_code, nowhere.output  # one line, no traceback
    assert f"cannot write {tmp_path}/no-such-dir/good: No such file or directory" \
        in nowhere.output and "Traceback" not in nowhere.output
    as_json = CliRunner().invoke(main, ["preflight", "-H", "a:2,b:1", "--timeout", "7",
                                        "--no-mpi", "--json"])
    assert as_json.exit_code == 5
    assert json.loads(as_json.output)["passed_hosts"] == ["a"]


def test_preflight_help_loads_no_ml_framework() -> None:
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom hvdtrain.commands import main\n"
        "res = CliRunner().invoke(main, ['preflight', '--help'])\n"
        "assert res.exit_code == 0, res.output\n"
        "assert 'exit status' in res.output.lower() and '--write-good-hostfile' in res.output\n"
        f"print([m for m in sys.modules if m.split('.')[0] in {HEAVY!r}])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_localhost_plan_passes_end_to_end(tmp_path: Path) -> None:
    env = clean_env(("SLURM_", "HVDTRAIN_"))
    mpi = [] if shutil.which("mpirun") else ["--no-mpi"]
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "hvdtrain", "preflight", "-np", "2", "--json",
                          *mpi], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env=env, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] and report["hosts"] == ["localhost"]
    checks = {(c["host"], c["check"]): c for c in report["checks"]}
    assert checks[("localhost", "run-dir")]["detail"] == f"{tmp_path / 'runs'} writable"
    if not mpi:
        assert "= 3 (expected 3)" in checks[("all", "mpi-allreduce")]["detail"]
    assert list(tmp_path.iterdir()) == []  # ./runs was only checked, not left behind
    assert time.monotonic() - start < 120
