"""Slurm's compressed host and task lists, expanded without calling ``scontrol``.

``gpu-[01-03,07],cpu1`` → ``gpu-01 gpu-02 gpu-03 gpu-07 cpu1`` (zero padding kept; several
bracket groups in one name multiply) and ``4(x3),2`` → ``4 4 4 2``. Pure functions so the
planner can run on a login node or a laptop given the same variables.
"""

from __future__ import annotations

import re

from hvdtrain.errors import HostfileError


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise HostfileError([f"SLURM_JOB_NODELIST: unbalanced ']' in {text!r}"])
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise HostfileError([f"SLURM_JOB_NODELIST: unbalanced '[' in {text!r}"])
    parts.append("".join(current))
    return parts


def _expand_range(spec: str, whole: str) -> list[str]:
    values: list[str] = []
    for part in spec.split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
        if not match:
            raise HostfileError([f"SLURM_JOB_NODELIST: bad range {part!r} in {whole!r}"])
        low, high = match.group(1), match.group(2) or match.group(1)
        if int(high) < int(low):
            raise HostfileError([f"SLURM_JOB_NODELIST: descending range {part!r} in {whole!r}"])
        width = len(low)
        values.extend(str(n).zfill(width) for n in range(int(low), int(high) + 1))
    return values


def _expand_name(name: str, whole: str) -> list[str]:
    match = re.search(r"\[([^\]]*)\]", name)
    if not match:
        return [name]
    prefix, suffix = name[: match.start()], name[match.end() :]
    return [
        expanded
        for value in _expand_range(match.group(1), whole)
        for expanded in _expand_name(prefix + value + suffix, whole)
    ]


def expand_nodelist(nodelist: str) -> list[str]:
    names: list[str] = []
    for item in _split_top_level(nodelist.strip()):
        if not item.strip():
            raise HostfileError([f"SLURM_JOB_NODELIST: empty entry in {nodelist!r}"])
        names.extend(_expand_name(item.strip(), nodelist))
    return names


def expand_tasks_per_node(spec: str, variable: str = "SLURM_NTASKS_PER_NODE") -> list[int]:
    counts: list[int] = []
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not match or int(match.group(1)) <= 0:
            raise HostfileError([f"{variable}: bad task count {part!r} in {spec!r}"])
        counts.extend([int(match.group(1))] * int(match.group(2) or 1))
    return counts
