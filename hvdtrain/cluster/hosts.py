"""One grammar for every way a user names hosts.

Accepted per line (hostfile) or per comma-separated item (``--hosts``):

* OpenMPI style  ``node1 slots=4 max_slots=8``
* MPICH/Intel    ``node1:4``  and IPv6 as ``[fe80::1]:2``
* bare           ``node1`` (one slot)
* our extension  ``gpus=0,2,5`` naming the GPU ids the host offers; without it a host with
  N slots offers GPU ids ``0..N-1``.

Full-line and inline ``#`` comments, blank lines and tabs are fine. The parser collects
*every* problem with its file, line and text (``hosts check`` shows them all); loading
raises ``HostfileError`` with the list. Horovod's own parser crashes on comments and blank
lines; this one is the single place host text becomes ``Host`` objects, and, the other way
round (``hostfile_line``, ``good_hostfile_text``: the hosts that passed ``hvdtrain
preflight``), ``Host`` objects become hostfile text this parser reads back as the same hosts.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hvdtrain.errors import HostfileError

_HOSTNAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_KNOWN_KEYS = ("slots", "max_slots", "gpus")


@dataclass(frozen=True)
class Host:
    """A host and what it offers: ``slots`` ranks, pinned to ``gpus[local_rank]``."""

    name: str
    slots: int
    gpus: tuple[int, ...]
    max_slots: int | None = None
    line: int | None = field(default=None, compare=False)

    def as_json(self) -> dict[str, object]:
        return {"host": self.name, "slots": self.slots, "gpus": list(self.gpus)}

    @property
    def launcher_name(self) -> str:
        """The name as horovodrun/mpirun want it in ``-H name:slots`` (IPv6 in brackets)."""
        return f"[{self.name}]" if ":" in self.name else self.name


@dataclass
class ParseResult:
    hosts: list[Host]
    problems: list[str]


def _where(source: str, line: int | None) -> str:
    return f"{source}:{line}" if line is not None else source


def _positive_int(text: str) -> int | None:
    if not re.fullmatch(r"\d+", text):
        return None
    value = int(text)
    return value if value > 0 else None


def _split_host_token(token: str) -> tuple[str, str | None, str | None]:
    """Split ``host``, ``host:N``, ``[v6]:N``, ``[v6]`` or bare ``v6`` into (host, slots, error)."""
    if token.startswith("["):
        match = re.fullmatch(r"\[([0-9A-Fa-f:.%a-zA-Z]+)\](?::(.*))?", token)
        if not match:
            return token, None, f"malformed bracketed IPv6 host {token!r}"
        return match.group(1), match.group(2), None
    if token.count(":") > 1:  # bare IPv6 address: no ':N' form without brackets
        return token, None, None
    host, sep, slots = token.partition(":")
    return host, (slots if sep else None), None


def _parse_entry(text: str, source: str, line: int | None) -> tuple[Host | None, list[str]]:
    """Parse one host entry (a hostfile line without its comment, or one --hosts item)."""
    where = _where(source, line)
    tokens = text.split()
    problems: list[str] = []

    def problem(message: str) -> None:
        problems.append(f"{where}: {message} in {text.strip()!r}")

    name, colon_slots, error = _split_host_token(tokens[0])
    if error:
        problem(error)
        return None, problems
    if not name or (not _HOSTNAME.match(name) and ":" not in name):
        problem(f"invalid host name {name!r}")
        return None, problems

    slots: int | None = None
    if colon_slots is not None:
        slots = _positive_int(colon_slots)
        if slots is None:
            problem(f"slots must be a positive integer, got {colon_slots!r}")
    values: dict[str, str] = {}
    for token in tokens[1:]:
        key, sep, value = token.partition("=")
        if not sep:
            problem(f"expected key=value, got {token!r}")
            continue
        if key not in _KNOWN_KEYS:
            problem(f"unknown key {key!r} (known: {', '.join(_KNOWN_KEYS)})")
            continue
        if key in values:
            problem(f"{key}= given twice")
            continue
        values[key] = value

    if "slots" in values:
        if colon_slots is not None:
            problem("slots given both as host:N and slots=")
        slots = _positive_int(values["slots"])
        if slots is None:
            problem(f"slots must be a positive integer, got {values['slots']!r}")
    max_slots: int | None = None
    if "max_slots" in values:
        max_slots = _positive_int(values["max_slots"])
        if max_slots is None:
            problem(f"max_slots must be a positive integer, got {values['max_slots']!r}")
    gpus: tuple[int, ...] | None = None
    if "gpus" in values:
        raw = [item.strip() for item in values["gpus"].split(",")]
        if not raw or any(not re.fullmatch(r"\d+", item) for item in raw):
            problem(f"gpus= must be a comma-separated list of GPU ids, got {values['gpus']!r}")
        else:
            gpus = tuple(int(item) for item in raw)
            if len(set(gpus)) != len(gpus):
                problem(f"gpus= repeats an id: {values['gpus']!r}")
    if problems:
        return None, problems

    if slots is None:
        slots = len(gpus) if gpus is not None else 1
    if max_slots is not None and max_slots < slots:
        problem(f"max_slots={max_slots} is less than slots={slots}")
    if gpus is not None and len(gpus) < slots:
        problem(f"gpus= lists {len(gpus)} ids but the host has {slots} slots")
    if problems:
        return None, problems
    return Host(name, slots, gpus if gpus is not None else tuple(range(slots)), max_slots, line), []


def _check_duplicates(hosts: list[Host], source: str) -> list[str]:
    seen: dict[str, Host] = {}
    problems = []
    for host in hosts:
        first = seen.get(host.name)
        if first is not None:
            problems.append(
                f"{_where(source, host.line)}: duplicate host {host.name!r} "
                f"(first at line {first.line})"
                if first.line is not None
                else f"{source}: duplicate host {host.name!r}"
            )
        else:
            seen[host.name] = host
    return problems


def _parse_entries(entries: list[tuple[str, int | None]], source: str) -> ParseResult:
    """Parse (text, line) entries, collecting every problem, then check for duplicates."""
    hosts: list[Host] = []
    problems: list[str] = []
    for content, line in entries:
        host, found = _parse_entry(content, source, line)
        problems.extend(found)
        if host is not None:
            hosts.append(host)
    problems.extend(_check_duplicates(hosts, source))
    return ParseResult(hosts, problems)


def parse_hostfile_text(text: str, source: str = "<hostfile>") -> ParseResult:
    entries: list[tuple[str, int | None]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        content = raw.split("#", 1)[0].strip()
        if content:
            entries.append((content, number))
    result = _parse_entries(entries, source)
    if not entries:
        result.problems.append(f"{source}: no hosts (the file is empty or only comments)")
    return result


def parse_hosts_string(text: str, source: str = "--hosts") -> ParseResult:
    """Parse horovodrun's ``-H h1:2,h2:4`` form (``[v6]:2`` for IPv6)."""
    items = [item.strip() for item in text.split(",")]
    result = _parse_entries([(item, None) for item in items if item], source)
    if not all(items):
        result.problems.insert(0, f"{source}: empty host entry in {text!r}")
    return result


def read_hostfile(path: str | Path) -> ParseResult:
    """Read and parse a hostfile; unreadable files are problems, not exceptions."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return ParseResult([], [f"{path}: no such hostfile"])
    except (OSError, UnicodeDecodeError) as exc:
        return ParseResult([], [f"{path}: cannot read hostfile ({exc.__class__.__name__}: {exc})"])
    return parse_hostfile_text(text, str(path))


def require(result: ParseResult) -> list[Host]:
    """Hosts of a clean parse, or a ``HostfileError`` listing every problem."""
    if result.problems:
        raise HostfileError(result.problems, hint="run 'hvdtrain hosts check FILE' to see them all")
    return result.hosts


def hostfile_line(host: Host) -> str:
    """``host`` as one OpenMPI-style hostfile line, only what differs from the defaults."""
    line = f"{host.name} slots={host.slots}"
    if host.max_slots is not None:
        line += f" max_slots={host.max_slots}"
    if host.gpus != tuple(range(host.slots)):
        line += f" gpus={','.join(map(str, host.gpus))}"
    return line


def good_hostfile_text(hosts: Sequence[Host], passed: Sequence[str]) -> str:
    """An OpenMPI-style hostfile of the hosts in ``passed``, as the plan had them (what
    ``hvdtrain preflight --write-good-hostfile`` writes)."""
    lines = ["# hosts that passed 'hvdtrain preflight' "
             f"({time.strftime('%Y-%m-%d %H:%M:%S')})"]
    keep = set(passed)
    lines += [hostfile_line(host) for host in hosts if host.name in keep]
    if len(lines) == 1:
        lines.append("# (no host passed)")
    return "\n".join(lines) + "\n"
