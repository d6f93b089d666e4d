"""How much of a step's allreduce hides behind the backward pass, read from a Horovod timeline.

Why: between hosts a data-parallel step costs compute plus whatever communication is *not*
overlapped with the backward pass. Horovod's timeline (``HOROVOD_TIMELINE``, chrome-tracing
JSON, written by the coordinator, rank 0) records every tensor's collective with the
network activity nested inside (``MPI_ALLREDUCE``, ``GLOO_ALLREDUCE``, ...). Its first record
carries the wall-clock time at which it started, so its microsecond offsets become epoch
microseconds, the same clock rank 0 stamps its own steps with (``time.time_ns``). A step is
then three stamps: its start, the moment the last parameter gradient was ready (end of the
backward compute) and its end. For each step:

* **communication**: the union of the network activities that start inside the step;
* **hidden**: the part of that union before the last gradient was ready (overlapped with
  backward);
* **exposed**: the part after it, which the step waits for.

Pure: no Horovod, no framework; the file is read, never written. Horovod leaves the JSON array
unterminated when a process ends without closing the timeline, so the reader closes it.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hvdtrain.errors import ConfigError

# timeline activity names of the network part of an allreduce (one per controller/library)
NETWORK_SUFFIX = "_ALLREDUCE"
NOT_NETWORK = frozenset({"NEGOTIATE_ALLREDUCE"})


@dataclass(frozen=True)
class Activity:
    tensor: str
    name: str
    start_us: int  # epoch microseconds
    end_us: int


@dataclass(frozen=True)
class Step:
    """Rank 0's stamps of one training step, epoch microseconds."""
    start_us: int
    gradients_ready_us: int  # the last parameter gradient accumulated: backward compute done
    end_us: int


@dataclass(frozen=True)
class StepOverlap:
    step_ms: float
    backward_ms: float  # step start to the last gradient ready (forward + backward compute)
    communication_ms: float
    hidden_ms: float
    exposed_ms: float

    @property
    def hidden_fraction(self) -> float:
        return self.hidden_ms / self.communication_ms if self.communication_ms > 0 else 0.0


def _events(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the timeline {path}: {exc.strerror}") from None
    if not text.startswith("["):
        raise ConfigError(f"{path} is not a Horovod timeline (no JSON array)")
    # open while Horovod runs; some writers close it after a trailing comma
    text = text.removesuffix("]").rstrip().rstrip(",") + "]"
    try:
        events = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not a Horovod timeline: {exc.msg} at line {exc.lineno}") \
            from None
    return [e for e in events if isinstance(e, dict)]


def read_activities(path: Path) -> list[Activity]:
    """Every closed activity of every tensor, in epoch microseconds."""
    events = _events(path)
    origin: int | None = None
    tensors: dict[int, str] = {}
    for event in events:
        if event.get("ph") != "M" or event.get("name") != "process_name":
            continue
        args = event.get("args", {})
        if "start_time_since_epoch_in_micros" in args:
            origin = int(args["start_time_since_epoch_in_micros"])
        elif "name" in args:
            tensors[int(event["pid"])] = str(args["name"])
    if origin is None:
        raise ConfigError(f"{path} has no start time (written by a Horovod older than 0.21?)")
    open_by_tensor: dict[int, list[tuple[str, int]]] = {}
    done: list[Activity] = []
    for event in events:
        phase = event.get("ph")
        if phase not in ("B", "E"):
            continue
        pid = int(event["pid"])
        if phase == "B":
            open_by_tensor.setdefault(pid, []).append((str(event["name"]), int(event["ts"])))
        elif open_by_tensor.get(pid):
            name, start = open_by_tensor[pid].pop()
            done.append(Activity(tensors.get(pid, str(pid)), name, origin + start,
                                 origin + int(event["ts"])))
    return sorted(done, key=lambda a: a.start_us)


def network_activities(activities: Iterable[Activity]) -> list[Activity]:
    return [a for a in activities
            if a.name.endswith(NETWORK_SUFFIX) and a.name not in NOT_NETWORK]


def union(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merged, sorted, non-overlapping intervals."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _length(intervals: Sequence[tuple[int, int]], low: int, high: int) -> int:
    """Total length of ``intervals`` inside [low, high]."""
    return sum(max(0, min(end, high) - max(start, low)) for start, end in intervals)


def step_overlap(step: Step, network: Sequence[Activity]) -> StepOverlap:
    """The step's communication (network activities starting inside it), split at the moment
    the backward compute ended."""
    busy = union((a.start_us, a.end_us) for a in network
                 if step.start_us <= a.start_us < step.end_us)
    total = _length(busy, step.start_us, max(step.end_us, busy[-1][1] if busy else 0))
    hidden = _length(busy, step.start_us, step.gradients_ready_us)
    return StepOverlap(step_ms=(step.end_us - step.start_us) / 1e3,
                       backward_ms=(step.gradients_ready_us - step.start_us) / 1e3,
                       communication_ms=total / 1e3, hidden_ms=hidden / 1e3,
                       exposed_ms=(total - hidden) / 1e3)


def summarise(overlaps: Sequence[StepOverlap]) -> dict[str, float]:
    """Medians over the steady-state steps (and the hidden fraction's min and max)."""
    if not overlaps:
        return {}
    fractions = [o.hidden_fraction for o in overlaps]
    return {"steps": len(overlaps),
            "step_ms": statistics.median(o.step_ms for o in overlaps),
            "backward_ms": statistics.median(o.backward_ms for o in overlaps),
            "communication_ms": statistics.median(o.communication_ms for o in overlaps),
            "exposed_ms": statistics.median(o.exposed_ms for o in overlaps),
            "hidden_fraction": statistics.median(fractions),
            "hidden_fraction_min": min(fractions), "hidden_fraction_max": max(fractions)}
