"""``hvdtrain preflight``: is every host of a plan ready to run ranks? One record per check.

Every host is probed in parallel, each within one per-host deadline that bounds all its steps
(name resolution, ``ssh``, the probe), so a dead host costs at most ``timeout`` seconds and
never a hang: ``ssh`` runs with ``BatchMode=yes`` (a password prompt is a failure, not a
wait), without stdin, in its own process group that is killed when the deadline passes, and
the probe on the host ends itself by the same deadline. Localhost-type hosts are probed in
process, without ``ssh``.

I/O and judgement are apart: ``probe_host`` and ``mpi_smoke_test`` run things; ``compare``,
``network_checks``, ``classify_ssh_failure`` and ``classify_probe_failure`` are pure functions
of probe results and exit statuses (the unit tests feed them fake ones). A failure is a
``HostCheck`` whose ``fix`` is one line a user can act on; checks that depend on a failed one
are not reported, so an unreachable host yields exactly one failure line.

The MPI allreduce smoke test runs only when every host passed (else it would only repeat
their failures, slowly), through ``mpirun_command`` with the plan's placement: the same argv
builder a launch uses.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hvdtrain.cluster.hosts import Host
from hvdtrain.cluster.planning import Plan
from hvdtrain.launch import probe as probe_module
from hvdtrain.launch.commands import ALWAYS_EXPORT, detect_mpi_flavour, mpirun_command
from hvdtrain.launch.network import is_local

ALL_HOSTS = "all"  # the host column of checks about the job as a whole
COMPARED_PACKAGES = ("horovod", "torch", "tensorflow", "mpi4py")
SMOKE_MARK = "HVDTRAIN_PREFLIGHT_ALLREDUCE"
SMOKE_PROGRAM = f"""
import json, socket
from mpi4py import MPI
comm = MPI.COMM_WORLD
total = comm.allreduce(comm.Get_rank() + 1)
hosts = comm.gather(socket.gethostname())
if comm.Get_rank() == 0:
    print("{SMOKE_MARK} " + json.dumps({{"sum": total, "size": comm.Get_size(), "hosts": hosts}}),
          flush=True)
"""


@dataclass(frozen=True)
class HostCheck:
    host: str
    check: str
    ok: bool
    detail: str
    fix: str = ""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def failure_line(self) -> str:
        return f"{self.host}: {self.check}: {self.detail}" + (f"; fix: {self.fix}"
                                                              if self.fix else "")


@dataclass(frozen=True)
class PreflightReport:
    hosts: tuple[str, ...]
    run_dir: str
    checks: tuple[HostCheck, ...]
    shared: Mapping[str, bool | None] = field(default_factory=dict)  # run dir seen by launcher
    notes: tuple[str, ...] = ()
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[HostCheck]:
        return [c for c in self.checks if not c.ok]

    def passed_hosts(self) -> list[str]:
        """Hosts none of whose own checks failed (job-level checks aside)."""
        failed = {c.host for c in self.failures}
        return [h for h in self.hosts if h not in failed]

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "hosts": list(self.hosts), "run_dir": self.run_dir,
                "passed_hosts": self.passed_hosts(), "shared": dict(self.shared),
                "checks": [c.as_json() for c in self.checks],
                "failures": [c.failure_line() for c in self.failures],
                "notes": list(self.notes), "elapsed_s": round(self.elapsed_s, 2)}


# ------------------------------------------------------------------------------ pure judgement

def classify_ssh_failure(host: str, returncode: int | None, stderr: str,
                         timeout: float) -> HostCheck:
    """The one failure ``ssh`` itself reported (exit 255, or our deadline: ``returncode``
    None), as the check it belongs to and its fix."""
    text = stderr.strip()
    last = text.splitlines()[-1] if text else f"ssh exited {returncode}"
    lowered = text.lower()
    if returncode is None:
        return HostCheck(host, "ssh", False, f"no answer over ssh within {timeout:g} s",
                         f"check that {host} is up and reachable from here (or raise --timeout)")
    if "could not resolve hostname" in lowered or "name or service not known" in lowered:
        return HostCheck(host, "resolve", False, f"{host} does not resolve ({last})",
                         f"fix the name in the hostfile, or add {host} to DNS or /etc/hosts")
    if "permission denied" in lowered:
        return HostCheck(host, "ssh", False,
                         "ssh refused the key (BatchMode: no password prompt)",
                         f"add your public key to ~/.ssh/authorized_keys on {host} "
                         f"(ssh-copy-id {host}); hvdtrain needs password-less ssh")
    if "host key verification failed" in lowered:
        return HostCheck(host, "ssh", False, f"{host}'s host key is unknown or changed",
                         f"accept its key once: ssh-keyscan {host} >> ~/.ssh/known_hosts "
                         "(check the fingerprint if it changed)")
    if "connection refused" in lowered:
        return HostCheck(host, "ssh", False, "sshd not reachable: connection refused",
                         f"start sshd on {host} (or set its port in ~/.ssh/config)")
    if any(s in lowered for s in ("timed out", "no route to host", "network is unreachable",
                                  "connection reset", "connection closed")):
        return HostCheck(host, "ssh", False, f"sshd not reachable: {last}",
                         f"check that {host} is up and that a firewall lets ssh through")
    return HostCheck(host, "ssh", False, f"ssh failed: {last}",
                     f"run 'ssh -o BatchMode=yes {host} true' to see why")


def classify_probe_failure(host: str, returncode: int, stdout: str, stderr: str,
                           python: str) -> HostCheck:
    """ssh worked, but the probe did not print its JSON line."""
    text = stderr.strip()
    last = text.splitlines()[-1] if text else f"exit status {returncode}"
    if returncode == 127 or (python in text and "no such file or directory" in text.lower()):
        return HostCheck(host, "python", False, f"{python} does not exist on {host}",
                         f"install the same environment at the same path on {host} "
                         "(ranks start with the launcher's interpreter path)")
    if re.search(r"No module named '?hvdtrain\.launch", text):
        return HostCheck(host, "hvdtrain", False,
                         f"the hvdtrain for {python} on {host} is older than this one",
                         f"install the launcher's hvdtrain on {host}")
    if re.search(r"No module named '?hvdtrain\b(?!\.)", text):
        return HostCheck(host, "hvdtrain", False,
                         f"hvdtrain is not installed for {python} on {host}",
                         f"install it on {host}: {python} -m pip install hvdtrain "
                         "(the same version and path as here)")
    if returncode < 0 or returncode == 128 + signal.SIGALRM:
        return HostCheck(host, "probe", False, "the probe did not finish in time",
                         "raise --timeout, or look at the host's load")
    if returncode == 0:
        shown = stdout.strip().splitlines()[-1][:80] if stdout.strip() else "nothing"
        return HostCheck(host, "probe", False, f"the probe printed no result (got {shown!r})",
                         f"make non-interactive shells on {host} print nothing (~/.bashrc)")
    return HostCheck(host, "probe", False, f"the probe failed: {last}",
                     f"run 'ssh {host} {python} -m hvdtrain.launch.probe' to see the error")


def parse_probe_output(stdout: str) -> dict[str, Any] | None:
    """The probe's JSON line (the last line that parses: shells may print banners)."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                found = json.loads(line)
            except ValueError:
                continue
            if isinstance(found, dict) and "hvdtrain" in found:
                return found
    return None


def _flags_text(build: Mapping[str, Any] | None) -> str:
    if not build:
        return "not installed"
    flags = build.get("flags") or {}
    on = [name for name, value in flags.items() if value] if flags else ["?"]
    return (f"frameworks {','.join(build.get('frameworks', [])) or 'none'}; "
            f"built with {','.join(on) or 'nothing'}")


def _build_differences(here: Mapping[str, Any], there: Mapping[str, Any] | None) -> list[str]:
    if there is None:
        return ["Horovod is not installed"]
    found = []
    if list(here.get("frameworks", [])) != list(there.get("frameworks", [])):
        found.append(f"frameworks {','.join(there.get('frameworks', [])) or 'none'} "
                     f"(here {','.join(here.get('frameworks', [])) or 'none'})")
    mine, theirs = here.get("flags") or {}, there.get("flags") or {}
    for name in sorted(set(mine) | set(theirs)):
        if mine.get(name) != theirs.get(name):
            found.append(f"{name}={theirs.get(name)} (here {mine.get(name)})")
    if dict(here.get("built_against", {})) != dict(there.get("built_against", {})):
        found.append(f"built against {there.get('built_against')} "
                     f"(here {here.get('built_against')})")
    return found


def compare(host: str, reference: Mapping[str, Any], probe: Mapping[str, Any]) -> list[HostCheck]:
    """What a host runs against what the launcher runs: Python, hvdtrain, the packages, how
    Horovod was built; then its run directory."""
    checks = []
    here_py, there_py = reference["python"], probe.get("python")
    here_exe, there_exe = reference["executable"], probe.get("executable")
    if (here_py, here_exe) == (there_py, there_exe):
        checks.append(HostCheck(host, "python", True, f"{there_py} at {there_exe}"))
    else:
        checks.append(HostCheck(host, "python", False,
                                f"Python {there_py} at {there_exe} (here {here_py} at {here_exe})",
                                f"install Python {here_py} with the same environment at "
                                f"{here_exe} on {host}"))
    here_hvd, there_hvd = reference["hvdtrain"], probe.get("hvdtrain")
    here_path, there_path = reference.get("hvdtrain_path"), probe.get("hvdtrain_path")
    if (here_hvd, here_path) == (there_hvd, there_path):
        checks.append(HostCheck(host, "hvdtrain", True, f"{there_hvd} at {there_path}"))
    else:
        checks.append(HostCheck(host, "hvdtrain", False,
                                f"hvdtrain {there_hvd} at {there_path} (here {here_hvd} at "
                                f"{here_path})",
                                f"install hvdtrain {here_hvd} at {here_path} on {host} (a "
                                "shared filesystem or the same checkout path)"))
    theirs = probe.get("packages") or {}
    for name in COMPARED_PACKAGES:
        want, got = reference["packages"].get(name), theirs.get(name)
        if want is None:
            continue  # not installed here either: nothing a rank could disagree about
        if got == want:
            checks.append(HostCheck(host, name, True, got))
        elif got is None:
            checks.append(HostCheck(host, name, False, f"not installed on {host} (here {want})",
                                    f"install {name}=={want} for {there_exe} on {host}"))
        else:
            checks.append(HostCheck(host, name, False, f"{name} {got} on {host}, {want} here",
                                    f"install {name}=={want} on {host}: every rank must run "
                                    "the same version"))
    if reference.get("horovod_build") is not None:
        differences = _build_differences(reference["horovod_build"], probe.get("horovod_build"))
        if differences:
            checks.append(HostCheck(host, "horovod-build", False,
                                    "Horovod differs: " + "; ".join(differences),
                                    f"rebuild Horovod on {host} the way it is built here "
                                    "(python scripts/build_horovod.py)"))
        else:
            checks.append(HostCheck(host, "horovod-build", True,
                                    _flags_text(probe.get("horovod_build"))))
    checks += run_dir_checks(host, probe.get("run_dir"))
    return checks


def run_dir_checks(host: str, status: Mapping[str, Any] | None) -> list[HostCheck]:
    if not status:
        return []
    path = status["path"]
    if not status.get("writable"):
        return [HostCheck(host, "run-dir", False, f"cannot write {path}: {status.get('error')}",
                          f"make {path} writable on {host} (mkdir -p, chown) or choose "
                          "another --run-dir")]
    shared = status.get("shared")
    detail = ("shared with the launcher" if shared else
              f"NOT shared: {host} has its own {path}" if shared is False else
              "unknown whether shared (the launcher could not write it)")
    return [HostCheck(host, "run-dir", True, f"{path} writable"),
            HostCheck(host, "shared", True, detail)]


def _networks(probe: Mapping[str, Any]) -> dict[ipaddress.IPv4Network, str] | None:
    """The host's non-loopback IPv4 networks, each with its interface."""
    addresses = probe.get("addresses")
    if addresses is None:
        return None
    found: dict[ipaddress.IPv4Network, str] = {}
    for item in addresses:
        try:
            iface = ipaddress.IPv4Interface(f"{item['address']}/{item['prefixlen']}")
        except (KeyError, ValueError):
            continue
        if not iface.ip.is_loopback:
            found.setdefault(iface.network, item.get("interface", "?"))
    return found


def interface_checks(wanted: str, probes: Mapping[str, Mapping[str, Any]]) -> list[HostCheck]:
    """``--network-interface`` (a name or a network) must exist on every host, or the ranks
    cannot reach each other's ports on it: say so before launching, naming the host."""
    checks = []
    for host, probe in probes.items():
        addresses = probe.get("addresses")
        if addresses is None:
            continue
        if "/" in wanted:
            net = ipaddress.ip_network(wanted, strict=False)
            ok = any(ipaddress.ip_address(a.get("address", "0.0.0.0")) in net
                     for a in addresses)
        else:
            ok = any(a.get("interface") == wanted for a in addresses)
        have = ", ".join(sorted({f"{a.get('interface')} {a.get('address')}/{a.get('prefixlen')}"
                                 for a in addresses})) or "none"
        checks.append(HostCheck(host, "network-interface", ok,
                                f"{wanted} {'present' if ok else 'not on this host'}"
                                + ("" if ok else f" (has: {have})"),
                                "" if ok else "give --network-interface a network every host "
                                "is on (e.g. 10.0.0.0/24): names differ between hosts"))
    return checks


def network_checks(reference: Mapping[str, Any],
                   probes: Mapping[str, Mapping[str, Any]]) -> list[HostCheck]:
    """Per remote host: does it share an IPv4 subnet with the launcher? Then, with more than
    one remote host, is there one subnet every host and the launcher are on (the CIDR to
    hand MPI: interface *names* differ between a launcher and its hosts)?"""
    here = _networks(reference)
    checks = []
    common: set[ipaddress.IPv4Network] | None = set(here) if here is not None else None
    for host, probe in probes.items():
        there = _networks(probe)
        if here is None or there is None:
            who = "the launcher" if here is None else host
            checks.append(HostCheck(host, "network", True, f"not checked (no 'ip -j addr' on "
                                                           f"{who})"))
            continue
        shared = sorted(set(here) & set(there))
        if common is not None:
            common &= set(there)
        if shared:
            shown = ", ".join(f"{net} ({there[net]}; here {here[net]})" for net in shared)
            checks.append(HostCheck(host, "network", True, shown))
        else:
            theirs = ", ".join(str(n) for n in sorted(there)) or "none"
            mine = ", ".join(str(n) for n in sorted(here)) or "none"
            checks.append(HostCheck(host, "network", False,
                                    f"no IPv4 subnet in common with the launcher ({host}: "
                                    f"{theirs}; here: {mine})",
                                    f"launch from a machine on {host}'s network, or connect "
                                    "the launcher to it"))
    if len(probes) > 1 and common is not None and all(c.ok for c in checks):
        if common:
            cidr = str(sorted(common)[0])
            checks.append(HostCheck(ALL_HOSTS, "network", True,
                                    f"every host and the launcher share {cidr} (for MPI: "
                                    f"-mca btl_tcp_if_include {cidr})"))
        else:
            checks.append(HostCheck(ALL_HOSTS, "network", False,
                                    "no IPv4 subnet is common to every host and the launcher",
                                    "put every host on one network with the launcher"))
    return checks


def smoke_result(stdout: str, size: int) -> tuple[bool, str]:
    """(ok, detail) from rank 0's line of the allreduce smoke test."""
    expected = size * (size + 1) // 2
    for line in stdout.splitlines():
        if line.startswith(SMOKE_MARK + " "):
            try:
                found = json.loads(line[len(SMOKE_MARK) + 1:])
            except ValueError:
                break
            hosts = ",".join(sorted(set(found.get("hosts") or [])))
            ok = found.get("sum") == expected and found.get("size") == size
            return ok, (f"allreduce of rank+1 over {found.get('size')} ranks on {hosts} = "
                        f"{found.get('sum')} (expected {expected})")
    return False, "rank 0 printed no result"


def good_hostfile_text(hosts: Sequence[Host], passed: Sequence[str]) -> str:
    """An OpenMPI-style hostfile of the hosts in ``passed``, as the plan had them."""
    lines = ["# hosts that passed 'hvdtrain preflight' "
             f"({time.strftime('%Y-%m-%d %H:%M:%S')})"]
    keep = set(passed)
    for host in hosts:
        if host.name not in keep:
            continue
        line = f"{host.name} slots={host.slots}"
        if host.max_slots is not None:
            line += f" max_slots={host.max_slots}"
        if host.gpus != tuple(range(host.slots)):
            line += f" gpus={','.join(map(str, host.gpus))}"
        lines.append(line)
    if len(lines) == 1:
        lines.append("# (no host passed)")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------- I/O

@dataclass(frozen=True)
class Ran:
    returncode: int | None  # None: killed at the deadline
    stdout: str
    stderr: str
    seconds: float


def run_bounded(argv: Sequence[str], timeout: float, env: Mapping[str, str] | None = None,
                grace: float = 0.0) -> Ran:
    """Run ``argv`` without stdin in its own process group; at ``timeout`` the group gets
    SIGTERM (when ``grace``, so mpirun can stop its remote daemons), then SIGKILL."""
    start = time.monotonic()
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=dict(env) if env is not None else None)
    try:
        out, err = proc.communicate(timeout=max(0.1, timeout))
        return Ran(proc.returncode, out, err, time.monotonic() - start)
    except subprocess.TimeoutExpired:
        if grace > 0:
            _killpg(proc.pid, signal.SIGTERM)
            try:
                out, err = proc.communicate(timeout=grace)
                return Ran(None, out, err, time.monotonic() - start)
            except subprocess.TimeoutExpired:
                pass
        _killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return Ran(None, out, err, time.monotonic() - start)
    except BaseException:
        _killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def resolve(name: str, timeout: float) -> tuple[list[str], str | None]:
    """(addresses, error) of ``name`` by the system resolver, given up after ``timeout``
    (the lookup thread is a daemon: a stuck resolver cannot hold the process)."""
    result: dict[str, Any] = {}

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
            result["addresses"] = list(dict.fromkeys(str(i[4][0]) for i in infos))
        except (OSError, UnicodeError) as exc:
            result["error"] = str(exc)

    thread = threading.Thread(target=lookup, daemon=True, name=f"resolve-{name}")
    thread.start()
    thread.join(max(0.1, timeout))
    if thread.is_alive():
        return [], f"no answer within {timeout:g} s"
    return result.get("addresses", []), result.get("error")


def ssh_hostname(host: str, ssh: Sequence[str], timeout: float) -> str:
    """The name ``ssh`` connects to for ``host`` (a ``HostName`` in ~/.ssh/config wins)."""
    try:
        ran = run_bounded([*ssh, "-G", host], timeout)
    except OSError:
        return host
    for line in ran.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key == "hostname" and value.strip():
            return value.strip()
    return host


def probe_argv(python: str, run_dir: str | None, marker: str | None,
               deadline: float) -> list[str]:
    argv = [python, "-m", "hvdtrain.launch.probe", "--deadline", f"{deadline:.0f}"]
    if run_dir:
        argv += ["--run-dir", run_dir]
    if marker:
        argv += ["--marker", marker]
    return argv


def probe_remote(host: str, run_dir: str | None, marker: str | None, timeout: float,
                 ssh: Sequence[str] = ("ssh",),
                 python: str = sys.executable) -> tuple[list[HostCheck], dict[str, Any] | None]:
    """Resolve ``host``, ssh to it and run the probe there, all within ``timeout``: the checks
    that passed, then at most one failure; and the probe's result when there is one."""
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(0.1, deadline - time.monotonic())

    target = ssh_hostname(host, ssh, min(5.0, left()))
    addresses, error = resolve(target, left())
    alias = f"{host} -> {target}: " if target != host else ""
    if error or not addresses:
        return [HostCheck(host, "resolve", False, f"{alias}{host} does not resolve ({error})",
                          f"fix the name in the hostfile, or add {target} to DNS or "
                          "/etc/hosts")], None
    checks = [HostCheck(host, "resolve", True, alias + ", ".join(addresses))]
    remote = probe_argv(python, run_dir, marker, max(2.0, left() - 1.0))
    if os.environ.get("PYTHONPATH"):  # mpirun forwards it to the ranks: so does the probe
        remote = ["env", f"PYTHONPATH={os.environ['PYTHONPATH']}", *remote]
    connect = max(1, int(left() / 2))
    argv = [*ssh, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect}", "-T", host,
            shlex.join(remote)]
    try:
        ran = run_bounded(argv, left())
    except OSError as exc:
        return [*checks, HostCheck(host, "ssh", False, f"cannot run {ssh[0]}: {exc.strerror}",
                                   "install the OpenSSH client (apt-get install "
                                   "openssh-client)")], None
    if ran.returncode is None or ran.returncode == 255:
        return [*checks, classify_ssh_failure(host, ran.returncode, ran.stderr, timeout)], None
    found = parse_probe_output(ran.stdout) if ran.returncode == 0 else None
    if found is None:
        checks.append(HostCheck(host, "ssh", True, "BatchMode ok"))
        return [*checks, classify_probe_failure(host, ran.returncode, ran.stdout, ran.stderr,
                                                python)], None
    checks.append(HostCheck(host, "ssh", True, f"BatchMode ok, hostname {found['hostname']} "
                                                f"({ran.seconds:.1f} s with the probe)"))
    return checks, found


def mpi_smoke_test(plan: Plan, timeout: float, python: str = sys.executable,
                   flavour: str | None = None,
                   environ: Mapping[str, str] | None = None) -> HostCheck:
    """An mpi4py allreduce of (rank + 1) over every rank of the plan: the sum must be
    n(n+1)/2. Proves mpirun starts ranks on every host and they can talk to each other."""
    environ = os.environ if environ is None else environ
    flavour = flavour or detect_mpi_flavour()
    if flavour is None:
        return HostCheck(ALL_HOSTS, "mpi-allreduce", False, "mpirun not found on the launcher",
                         "install OpenMPI (apt-get install openmpi-bin libopenmpi-dev), or "
                         "skip this test with --no-mpi")
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    command = mpirun_command(plan.placement, [python, "-c", SMOKE_PROGRAM], flavour,
                             is_root=is_root, inherit=[n for n in ALWAYS_EXPORT if n in environ])
    by_hand = shlex.join([*command.argv[:command.argv.index(python)], "hostname"])
    try:
        ran = run_bounded(command.argv, timeout, {**environ, **command.env}, grace=5.0)
    except OSError as exc:
        return HostCheck(ALL_HOSTS, "mpi-allreduce", False, f"cannot run mpirun: {exc}",
                         "install OpenMPI, or skip this test with --no-mpi")
    size = plan.placement.size
    if ran.returncode is None:
        return HostCheck(ALL_HOSTS, "mpi-allreduce", False,
                         f"mpirun did not finish within {timeout:g} s",
                         f"try '{by_hand}'; if that works, pin MPI to the common subnet "
                         "(-mca btl_tcp_if_include CIDR -mca oob_tcp_if_include CIDR)")
    ok, detail = smoke_result(ran.stdout, size)
    if ok and ran.returncode == 0:
        return HostCheck(ALL_HOSTS, "mpi-allreduce", True, f"{detail}, {ran.seconds:.1f} s")
    errors = [line.strip() for line in ran.stderr.splitlines()
              if line.strip() and "setpgid" not in line and not line.startswith("---")]
    if "No module named 'mpi4py'" in ran.stderr:
        return HostCheck(ALL_HOSTS, "mpi-allreduce", False, "mpi4py is not installed",
                         f"{python} -m pip install mpi4py (on every host)")
    why = errors[-1] if errors else f"mpirun exited {ran.returncode}"
    return HostCheck(ALL_HOSTS, "mpi-allreduce", False,
                     f"{detail}; mpirun exited {ran.returncode}: {why}",
                     f"try '{by_hand}' to see what MPI says")


def _place_marker(run_dir: str) -> tuple[str | None, list[Path]]:
    """Create ``run_dir`` here if needed and a marker in it: (marker name, created dirs)."""
    path = Path(run_dir)
    created: list[Path] = []
    try:
        for directory in reversed([p for p in (path, *path.parents) if not p.exists()]):
            directory.mkdir()
            created.append(directory)
        marker = f".hvdtrain-preflight-{uuid.uuid4().hex[:12]}"
        (path / marker).write_text(f"{socket.gethostname()}\n")
        return marker, created
    except OSError:
        return None, created


def _remove_marker(run_dir: str, marker: str | None, created: list[Path]) -> None:
    if marker:
        try:
            (Path(run_dir) / marker).unlink()
        except OSError:
            pass
    for directory in reversed(created):
        try:
            directory.rmdir()
        except OSError:
            pass


def run_preflight(plan: Plan, run_dir: str | Path, timeout: float = 20.0,
                  ssh: Sequence[str] = ("ssh",), mpi_smoke: bool = True,
                  mpi_timeout: float | None = None,
                  network_interface: str | None = None) -> PreflightReport:
    """Check every host of ``plan`` (in parallel, each within ``timeout`` seconds), then, when
    all passed, run the MPI smoke test over the plan's placement."""
    start = time.monotonic()
    run_dir = str(Path(run_dir).absolute())
    names = list(dict.fromkeys(h.name for h in plan.hosts))
    marker, created = _place_marker(run_dir)
    notes: list[str] = []
    try:
        reference = probe_module.collect(run_dir, marker, min(10.0, timeout))
        local = [n for n in names if is_local(n)]
        remote = [n for n in names if n not in local]
        results: dict[str, tuple[list[HostCheck], dict[str, Any] | None]] = {}
        if remote:
            with ThreadPoolExecutor(max_workers=min(32, len(remote))) as pool:
                futures = {n: pool.submit(probe_remote, n, run_dir, marker, timeout, ssh)
                           for n in remote}
                results = {n: f.result() for n, f in futures.items()}
        checks: list[HostCheck] = []
        probes: dict[str, dict[str, Any]] = {}
        for name in names:
            if name in local:
                checks.append(HostCheck(name, "resolve", True, "local host: no ssh needed"))
                checks += compare(name, reference, reference)
                probes[name] = reference
                continue
            host_checks, found = results[name]
            checks += host_checks
            if found is not None:
                checks += compare(name, reference, found)
                probes[name] = found
        remote_probes = {n: p for n, p in probes.items() if n in remote}
        checks += network_checks(reference, remote_probes)
        if network_interface:
            checks += interface_checks(network_interface, remote_probes)
        if marker is None:
            notes.append(f"could not write {run_dir} on the launcher: whether hosts share it "
                         "is unknown")
        failed = sorted({c.host for c in checks if not c.ok})
        if not mpi_smoke:
            notes.append("MPI allreduce smoke test skipped (--no-mpi)")
        elif failed:
            notes.append(f"MPI allreduce smoke test not run: checks failed on {', '.join(failed)}")
        else:
            checks.append(mpi_smoke_test(plan, mpi_timeout or max(30.0, 2 * timeout)))
        order = {name: index for index, name in enumerate(names)}
        checks.sort(key=lambda c: order.get(c.host, len(order)))  # stable: by host, then "all"
        shared = {n: (p.get("run_dir") or {}).get("shared") for n, p in probes.items()}
    finally:
        _remove_marker(run_dir, marker, created)
    return PreflightReport(tuple(names), run_dir, tuple(checks), shared, tuple(notes),
                           time.monotonic() - start)
