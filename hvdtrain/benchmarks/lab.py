"""Two "hosts" joined by a shaped link, for benchmarks where the network must matter.

On one machine the ranks talk over loopback at memory speed, which hides what compression and
fusion buy between real nodes. This brings up the repository's namespace lab
(``scripts/netns_hosts.sh``: two network namespaces with their own sshd on a bridge), limits
every host link with ``tc`` (token bucket, both directions), yields the host names, and always
takes it all down again, also when the benchmark fails or is interrupted. A lab that was
already up (a test session's) is only shaped and unshaped, never taken down.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hvdtrain.errors import ConfigError

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "netns_hosts.sh"
HOSTS = ("hvdh1", "hvdh2")


def _lab(*args: str, timeout: float = 600) -> None:
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ConfigError(f"the shaped-link lab failed at '{' '.join(args)}': {last}",
                          hint="it needs root and permission to create network namespaces")


@contextmanager
def shaped_hosts(rate: str) -> Iterator[tuple[str, ...]]:
    if not SCRIPT.is_file():
        raise ConfigError("--shaped-link needs the repository's scripts/netns_hosts.sh",
                          hint="run it from an hvdtrain checkout (pip install -e .)")
    already_up = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True,
                                timeout=60, stdin=subprocess.DEVNULL).returncode == 0
    try:
        if not already_up:
            _lab("up", str(len(HOSTS)))
        _lab("shape", rate, timeout=60)
        yield HOSTS
    finally:
        _lab("unshape", timeout=60) if already_up else _lab("down")
