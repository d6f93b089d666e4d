"""Reaching one host for the preflight: resolve its name, ``ssh`` to it, run the probe there.

All of it within one deadline: the resolver runs in a daemon thread that is given up on,
``ssh`` runs with ``BatchMode=yes`` (a password prompt is a failure, not a wait) and without
stdin through ``run_bounded``, whose process group is killed at the deadline, and the probe
on the host (``launch.probe``) ends itself by the same deadline. What ``ssh`` or the probe
said is judged by ``checks``.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from hvdtrain.launch.preflight.checks import (
    classify_probe_failure,
    classify_ssh_failure,
    parse_probe_output,
)
from hvdtrain.launch.preflight.report import HostCheck
from hvdtrain.launch.processes import run_bounded


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

