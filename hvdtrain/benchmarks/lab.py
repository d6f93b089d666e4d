"""N "hosts" joined by shaped links, for benchmarks where the network must matter.

On one machine the ranks talk over loopback at memory speed, which hides what compression and
fusion buy between real nodes. This brings up the repository's namespace lab
(``scripts/netns_hosts.sh``: network namespaces hvdh1..hvdhN with their own sshd on a bridge),
limits every host link with ``tc`` (token bucket, both directions), yields the host names, and
always takes it all down again, also when the benchmark fails or is interrupted. A lab that
was already up (a test session's) is only shaped and unshaped, never taken down; it must
already have the hosts asked for.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hvdtrain.errors import ConfigError

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "netns_hosts.sh"
MAX_HOSTS = 3  # netns_hosts.sh's limit (fixed names and subnet)


def host_names(count: int) -> tuple[str, ...]:
    """The names ``netns_hosts.sh up N`` gives its hosts (and puts in /etc/hosts)."""
    return tuple(f"hvdh{k}" for k in range(1, count + 1))


HOSTS = host_names(2)  # the default lab


def check_count(count: int) -> None:
    """``--shaped-hosts``: checked before anything is brought up (or any rank launched)."""
    if not 2 <= count <= MAX_HOSTS:
        raise ConfigError(f"--shaped-hosts must be 2..{MAX_HOSTS}, got {count}",
                          hint="a shaped link needs two hosts at least; scripts/netns_hosts.sh "
                          f"makes at most {MAX_HOSTS}")


def hosts_up(status_output: str) -> int:
    """How many of hvdh1, hvdh2, ... in a row ``netns_hosts.sh status`` reports up."""
    up = set(re.findall(r"\bhvdh(\d+) \S+: namespace up", status_output))
    count = 0
    while str(count + 1) in up:
        count += 1
    return count


def _lab(*args: str, timeout: float = 600) -> None:
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ConfigError(f"the shaped-link lab failed at '{' '.join(args)}': {last}",
                          hint="it needs root and permission to create network namespaces")


@contextmanager
def shaped_hosts(rate: str, count: int = 2) -> Iterator[tuple[str, ...]]:
    """``count`` namespace hosts with every link shaped to ``rate``, for the ``with`` body."""
    check_count(count)
    if not SCRIPT.is_file():
        raise ConfigError("--shaped-link needs the repository's scripts/netns_hosts.sh",
                          hint="run it from an hvdtrain checkout (pip install -e .)")
    status = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL)
    already_up = status.returncode == 0
    if already_up and hosts_up(status.stdout) < count:
        raise ConfigError(f"the namespace lab is already up with {hosts_up(status.stdout)} "
                          f"host(s); --shaped-hosts {count} needs {count}",
                          hint="take it down first (scripts/netns_hosts.sh down), or ask for "
                          "fewer hosts")
    try:
        if not already_up:
            _lab("up", str(count))
        _lab("shape", rate, timeout=60)
        yield host_names(count)
    finally:
        _lab("unshape", timeout=60) if already_up else _lab("down")
