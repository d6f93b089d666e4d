"""Horovod elastic's host discovery: ``python -m hvdtrain.cluster.discover HOSTFILE``.

horovodrun (``--host-discovery-script``) runs the script hvdtrain generates for an elastic job
about once a second; the script runs this module, which re-reads the hostfile each time, so
editing the file adds or removes hosts while the job runs. It prints one ``host:slots`` line
per host, the only form Horovod's discovery parses (it splits on ``:``, so IPv6 addresses
cannot be expressed and are refused). The hostfile grammar is the one of ``cluster.hosts``
(comments, ``slots=``, ``host:N``), not Horovod's own stricter parser.

A file that cannot be read or parsed exits 1 with the problems on stderr: on the first call
Horovod then stops the job at once (a typo is reported before anything starts); on later calls
it keeps the hosts it knew and asks again, so a half-saved edit does no harm.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from hvdtrain.cluster.hosts import Host, read_hostfile


def discovery_lines(hosts: Iterable[Host]) -> tuple[list[str], list[str]]:
    """(``host:slots`` lines, problems) for Horovod's discovery."""
    lines, problems = [], []
    for host in hosts:
        if ":" in host.name:
            problems.append(f"{host.name}: Horovod's host discovery cannot express IPv6 "
                            "addresses; use a host name")
            continue
        lines.append(f"{host.name}:{host.slots}")
    return lines, problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m hvdtrain.cluster.discover HOSTFILE", file=sys.stderr)
        return 2
    parsed = read_hostfile(Path(args[0]))
    lines, problems = discovery_lines(parsed.hosts)
    problems = parsed.problems + problems
    if problems:
        for problem in problems:
            print(f"hvdtrain discover: {problem}", file=sys.stderr)
        return 1
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
