"""Exactly-once checks for runs with ``--record-samples``: rank 0 records, in
``samples/committed.jsonl``, the training-set indices each commit point holds (a checkpoint,
an elastic commit, the final model); over a whole run, with restarts, resumes at other world
sizes and elastic resets, each epoch must hold every sample exactly once."""

from __future__ import annotations

import collections
import json
from pathlib import Path

DIGITS_TRAIN = 1438  # 1797 digits, 20 % held out for validation


def samples_per_epoch(run_dir: Path) -> dict[int, list[int]]:
    seen: dict[int, list[int]] = collections.defaultdict(list)
    for path in (run_dir / "samples").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            seen[record["epoch"]] += record["indices"]
    return seen


def assert_exactly_once(run_dir: Path, epochs: int, n: int = DIGITS_TRAIN) -> None:
    seen = samples_per_epoch(run_dir)
    assert sorted(seen) == list(range(epochs))
    for epoch, indices in seen.items():
        counts = collections.Counter(indices)
        repeated = [i for i, c in counts.items() if c > 1]
        missing = sorted(set(range(n)) - set(counts))
        assert not repeated and not missing, (
            f"epoch {epoch + 1}: {len(repeated)} samples repeated, {len(missing)} skipped")
