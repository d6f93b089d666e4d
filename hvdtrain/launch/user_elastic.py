"""``hvdtrain launch --elastic``: a user's own elastic Horovod script, checked before it starts.

A script written for Horovod elastic (``hvd.elastic.run`` with ``TorchState``,
``TensorFlowKerasState`` or ``ObjectState``) runs under the same machinery as ``train
--elastic`` (``launch.elastic_hosts``: horovodrun with Gloo, a discovery script generated from
the hostfile, the launcher's interface and the rendezvous address the hosts reach; the
supervisor's elastic mode). What is different is that hvdtrain does not know the program, so
everything it can check is checked here, before horovodrun starts, as one line each:

* ``--min-np`` is required: horovodrun's own default (the starting ``-np``) makes the first
  lost worker end the job, which is rarely what a user who asked for elastic means;
* ``--min-np`` cannot be above the slots the hosts offer now: horovodrun would wait
  ``--elastic-timeout`` (600 s) for slots that may never come;
* a user's ``--discovery-script`` is run once: it must be executable, answer within seconds and
  print ``host:slots`` lines exactly as Horovod splits them (no spaces, one ``:``), since
  horovodrun turns a bad line into a traceback deep in its driver, or waits forever on none.
  Its hosts are the plan's: the starting ``-np``, which hosts are remote, and the rendezvous
  address come from them.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import replace
from pathlib import Path

from hvdtrain.cluster.hosts import Host
from hvdtrain.cluster.planning import PlacementRequest, Plan, make_plan
from hvdtrain.errors import ConfigError
from hvdtrain.launch.elastic_hosts import ElasticSettings, discovery_script, hostfile_path

DISCOVERY_TIMEOUT = 20.0  # seconds for the first call; horovodrun calls it about every second
# what Horovod's HostDiscoveryScript accepts and hvdtrain can plan with: name, one ':', slots
DISCOVERY_LINE = re.compile(r"([A-Za-z0-9_][A-Za-z0-9_.-]*):([0-9]+)")
FORMAT_HINT = ("print one 'host:slots' line per host and nothing else on stdout, e.g. "
               "'node1:4' (notes go to stderr)")


def parse_discovery(text: str, script: str) -> tuple[Host, ...]:
    """The hosts a discovery script printed, or a ``ConfigError`` naming the first bad line."""
    hosts: dict[str, Host] = {}
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue  # Horovod skips empty lines too
        found = DISCOVERY_LINE.fullmatch(line)
        if found is None or int(found.group(2)) < 1:
            shown = line if len(line) <= 60 else line[:57] + "..."
            raise ConfigError(f"--discovery-script {script}: line {number} {shown!r} is not "
                              "host:slots", hint=FORMAT_HINT)
        name = found.group(1)
        if name in hosts:
            raise ConfigError(f"--discovery-script {script}: host {name!r} is printed twice",
                              hint=FORMAT_HINT)
        hosts[name] = Host(name, int(found.group(2)), ())
    if not hosts:
        raise ConfigError(f"--discovery-script {script} printed no hosts",
                          hint="it must offer at least --min-np slots when the job starts; "
                          + FORMAT_HINT)
    return tuple(hosts.values())


def run_discovery(script: str, timeout: float = DISCOVERY_TIMEOUT) -> tuple[Host, ...]:
    """Run the user's discovery script once, as horovodrun will, and check its output."""
    path = Path(script)
    if not path.is_file():
        raise ConfigError(f"--discovery-script {script}: no such file")
    if not os.access(path, os.X_OK):
        raise ConfigError(f"--discovery-script {script} is not executable",
                          hint=f"chmod +x {script} (horovodrun runs it as a command)")
    try:
        done = subprocess.run([str(path.resolve())], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"--discovery-script {script} did not answer within {timeout:g} s",
                          hint="horovodrun calls it about once a second: it must answer "
                          "at once") from None
    except OSError as exc:  # e.g. no '#!' line: ENOEXEC
        raise ConfigError(f"--discovery-script {script} cannot be run: {exc.strerror}",
                          hint="start it with a '#!' line, e.g. #!/bin/sh") from None
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or [""])[-1]
        raise ConfigError(f"--discovery-script {script} exited with code {done.returncode}"
                          + (f": {said}" if said else ""))
    return parse_discovery(done.stdout, script)


def elastic_plan(request: PlacementRequest, elastic: ElasticSettings | None,
                 max_restarts: int = 0) -> Plan:
    """The plan of ``hvdtrain launch``; with ``--elastic``, after the checks above. Without
    ``-np`` an elastic job starts with every slot on offer, up to ``--max-np``."""
    if elastic is None:
        return make_plan(request)
    if max_restarts:
        raise ConfigError("--elastic and --max-restarts are two ways to survive a failed host; "
                          "choose one", hint="docs/FAULT_TOLERANCE.md compares them")
    if elastic.min_np is None:
        raise ConfigError("--elastic needs --min-np: the fewest ranks your script can go on with",
                          hint="e.g. --elastic --min-np 1 --max-np 4")
    source = None
    if elastic.discovery_script:
        if request.hostfile or request.hosts:
            raise ConfigError("--discovery-script gives the hosts; drop --hostfile/--hosts",
                              hint="or drop --discovery-script: hvdtrain then writes one that "
                              "re-reads the hostfile")
        found = run_discovery(elastic.discovery_script)
        request = replace(request, hosts=",".join(f"{h.name}:{h.slots}" for h in found))
        source = f"--discovery-script {elastic.discovery_script}"
    offered = make_plan(replace(request, np=None))
    slots = sum(host.slots for host in offered.hosts)
    if elastic.min_np > slots:
        raise ConfigError(f"--min-np {elastic.min_np} is above the {slots} slot(s) on offer "
                          f"({offered.source.description})",
                          hint="lower --min-np, or add hosts before the launch")
    np = request.np or min(slots, elastic.max_np or slots)
    plan = make_plan(replace(request, np=np))
    if source is not None:
        plan = replace(plan, source=replace(plan.source, description=source))
    return plan


def elastic_notes(settings: ElasticSettings, root: Path, np: int) -> list[str]:
    """For ``--dry-run`` and ``plan``: the elastic settings, one line each."""
    script = discovery_script(root, settings)
    hosts = ("your own; run once now, its hosts are the plan's" if settings.discovery_script
             else f"written at launch; re-reads {hostfile_path(root, settings)} on every call, "
             "edit it to add or remove hosts")
    bounds = f"{settings.min_np if settings.min_np is not None else np} to " + (
        str(settings.max_np) if settings.max_np is not None else "any number of")
    return [f"elastic: {bounds} ranks, starting with {np}; below --min-np it waits "
            f"{settings.timeout:g} s (--elastic-timeout) for hosts, then stops"
            + (f"; at most {settings.reset_limit} membership changes"
               if settings.reset_limit is not None else ""),
            f"host discovery: {script} ({hosts})"]
