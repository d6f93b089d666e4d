"""The preflight's judgement: pure functions from probe results and exit statuses to checks.

Nothing here runs a process or touches the network (``remote`` and ``run`` do), so the unit
tests feed these fake probe results, ``ssh`` errors and ``mpirun`` output. Each failure is a
``HostCheck`` with one line of ``fix`` a user can act on; a check that depends on a failed one
is not made, so an unreachable host is one failure line, not five.
"""

from __future__ import annotations

import ipaddress
import json
import re
import signal
from collections.abc import Mapping
from typing import Any

from hvdtrain.launch.preflight.report import ALL_HOSTS, HostCheck

COMPARED_PACKAGES = ("horovod", "torch", "tensorflow", "mpi4py")
# The smoke test's program and the mark its rank 0 prints, read back by ``smoke_result``.
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

