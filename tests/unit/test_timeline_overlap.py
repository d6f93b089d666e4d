"""The overlap analysis of ``hvdtrain bench overlap`` on timelines whose answer is known."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hvdtrain.benchmarks import timeline
from hvdtrain.benchmarks.timeline import Activity, Step, step_overlap
from hvdtrain.errors import ConfigError

ORIGIN = 1_000_000_000


def _write(path: Path, records: list[dict], terminated: bool = False) -> Path:
    """A timeline as Horovod writes it: one array, left open while the process runs."""
    head = [{"name": "process_name", "ph": "M", "pid": 0,
             "args": {"start_time_since_epoch_in_micros": ORIGIN}}]
    body = ",\n".join(json.dumps(r) for r in head + records)
    path.write_text("[\n" + body + (",\n]" if terminated else ","))
    return path


def _tensor(pid: int, name: str) -> dict:
    return {"name": "process_name", "ph": "M", "pid": pid, "args": {"name": name}}


def _span(pid: int, name: str, start: int, end: int) -> list[dict]:
    return [{"ph": "B", "name": name, "ts": start, "pid": pid}, {"ph": "E", "ts": end, "pid": pid}]


def test_activities_are_nested_per_tensor_and_shifted_to_the_epoch(tmp_path: Path) -> None:
    records = [_tensor(1, "grad.a"), _tensor(2, "grad.b"),
               *_span(1, "NEGOTIATE_ALLREDUCE", 0, 10),
               {"ph": "B", "name": "ALLREDUCE", "ts": 10, "pid": 1},
               *_span(1, "MPI_ALLREDUCE", 12, 40),
               {"ph": "E", "ts": 41, "pid": 1},
               *_span(2, "GLOO_ALLREDUCE", 50, 70)]
    for terminated in (False, True):  # Horovod leaves the array open until it stops
        activities = timeline.read_activities(_write(tmp_path / "t.json", records, terminated))
        network = timeline.network_activities(activities)
        assert [(a.tensor, a.name, a.start_us - ORIGIN, a.end_us - ORIGIN) for a in network] \
            == [("grad.a", "MPI_ALLREDUCE", 12, 40), ("grad.b", "GLOO_ALLREDUCE", 50, 70)]
        assert {a.name for a in activities} == {"NEGOTIATE_ALLREDUCE", "ALLREDUCE",
                                                "MPI_ALLREDUCE", "GLOO_ALLREDUCE"}


def test_communication_splits_at_the_end_of_the_backward_compute() -> None:
    network = [Activity("a", "MPI_ALLREDUCE", 100, 300),  # hidden entirely
               Activity("b", "MPI_ALLREDUCE", 250, 450),  # overlaps a; 150 hidden, 50 not
               Activity("c", "MPI_ALLREDUCE", 600, 900),  # after backward: exposed
               Activity("z", "MPI_ALLREDUCE", 5000, 6000)]  # another step's
    overlap = step_overlap(Step(0, 400, 1000), network)
    assert overlap.communication_ms == pytest.approx(0.65)  # union 100–450 and 600–900
    assert overlap.hidden_ms == pytest.approx(0.30)
    assert overlap.exposed_ms == pytest.approx(0.35)
    assert overlap.hidden_fraction == pytest.approx(0.30 / 0.65)
    assert overlap.backward_ms == pytest.approx(0.4) and overlap.step_ms == pytest.approx(1.0)


def test_a_step_without_communication_hides_nothing() -> None:
    overlap = step_overlap(Step(0, 10, 20), [])
    assert overlap.communication_ms == 0 and overlap.hidden_fraction == 0.0


def test_summary_is_the_median_with_its_spread() -> None:
    steps = [Step(k * 1000, k * 1000 + 500, k * 1000 + 900) for k in range(3)]
    network = [Activity("a", "MPI_ALLREDUCE", k * 1000 + 400, k * 1000 + 400 + 200)
               for k in range(3)]
    summary = timeline.summarise([step_overlap(s, network) for s in steps])
    assert summary["hidden_fraction"] == pytest.approx(0.5)
    assert summary["steps"] == 3 and summary["exposed_ms"] == pytest.approx(0.1)


@pytest.mark.parametrize(("text", "fragment"), [
    ("not json", "not a Horovod timeline"),
    ("[{\"ph\": \"B\", ", "not a Horovod timeline"),
    ("[{\"name\": \"process_name\", \"ph\": \"M\", \"pid\": 1, \"args\": {\"name\": \"x\"}}]",
     "no start time"),
])
def test_what_is_not_a_timeline_is_one_line(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        timeline.read_activities(path)
