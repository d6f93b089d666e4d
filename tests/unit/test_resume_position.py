"""Mid-epoch checkpoints: the sampler position survives a change of world size, and the
checkpoint files order and retire correctly. NumPy only; the real runs are in
tests/distributed/test_fault_tolerance.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvdtrain.training.checkpoint import CheckpointStore, refuse_to_overwrite
from hvdtrain.training.sharding import consumed_after, decode_mask, encode_mask, shard_batches


def _segment(n: int, size: int, batch: int, seed: int, consumed: np.ndarray | None,
             steps: int | None) -> list[int]:
    """The samples every rank trains in ``steps`` steps (all of them when None)."""
    shards = [shard_batches(n, r, size, batch, seed, consumed) for r in range(size)]
    assert len({len(s) for s in shards}) == 1  # the same step count on every rank
    return [int(i) for s in shards for b in s[:steps] for i in b]


@settings(max_examples=200, deadline=None)
@given(n=st.integers(8, 400), first=st.integers(1, 5), second=st.integers(1, 5),
       batch=st.integers(1, 40), seed=st.integers(0, 9), cut=st.floats(0.0, 0.99))
def test_a_resumed_epoch_trains_every_sample_exactly_once(n: int, first: int, second: int,
                                                          batch: int, seed: int,
                                                          cut: float) -> None:
    steps = len(shard_batches(n, 0, first, batch, seed))
    done = int(cut * steps)  # the step checkpoint: `done` steps of every rank at size `first`
    before = _segment(n, first, batch, seed, None, done)
    mask = consumed_after(n, first, batch, seed, None, done)
    assert sorted(np.flatnonzero(mask).tolist()) == sorted(before)
    after = _segment(n, second, batch, seed, mask, None)  # resumed at size `second`
    assert sorted(before + after) == list(range(n))  # none skipped, none repeated


def test_twice_interrupted_epoch_still_exactly_once() -> None:
    n, batch, seed = 1000, 16, 3
    mask = consumed_after(n, 4, batch, seed, None, 5)  # 4 ranks, 5 steps
    mask2 = consumed_after(n, 2, batch, seed, mask, 7)  # then 2 ranks, 7 steps
    rest = _segment(n, 3, batch, seed, mask2, None)  # then 3 ranks to the end
    assert int(mask.sum()) == 4 * 5 * batch and int(mask2.sum()) == 4 * 5 * batch + 2 * 7 * batch
    assert sorted(np.flatnonzero(mask2).tolist() + rest) == list(range(n))


def test_no_rank_gets_an_empty_batch_while_samples_last() -> None:
    for n in range(3, 60):
        for size in (2, 3, 4):
            if n < size:
                continue
            for batch in (1, 2, 5):
                for rank in range(size):
                    assert all(len(b) for b in shard_batches(n, rank, size, batch, 0))


def test_mask_round_trips_through_text() -> None:
    mask = np.random.default_rng(0).random(12_345) < 0.3
    text = encode_mask(mask)
    assert np.array_equal(decode_mask(text, len(mask)), mask)
    assert len(text) < len(mask) // 4  # compact enough for a checkpoint's JSON


def _writer(text: str):  # type: ignore[no-untyped-def]
    return lambda path: path.write_text(text)


def test_step_checkpoints_order_between_epochs_and_only_the_newest_stays(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoints", keep=2)
    store.save(1, _writer("e1"), is_best=False)
    store.save(1, _writer("e1+100"), is_best=False, samples=100)
    store.save(1, _writer("e1+900"), is_best=False, samples=900)
    names = [p.name for _, p in store.files()]
    assert names == ["epoch-0001.ckpt", "epoch-0001-sample-0000900.ckpt"]
    assert store.resolve("latest").read_text() == "e1+900"  # type: ignore[union-attr]
    store.save(2, _writer("e2"), is_best=False)  # the epoch's end retires its step checkpoint
    assert [p.name for _, p in store.files()] == ["epoch-0001.ckpt", "epoch-0002.ckpt"]
    assert store.resolve("auto").read_text() == "e2"  # type: ignore[union-attr]


def test_resume_auto_starts_afresh_only_where_nothing_was_written(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoints")
    assert store.resolve("auto") is None
    refuse_to_overwrite(tmp_path, "auto")  # nothing here: fine
    store.save(0, _writer("mid"), is_best=False, samples=64)
    with pytest.raises(Exception, match="already holds checkpoints"):
        refuse_to_overwrite(tmp_path, None)  # a step checkpoint counts too
    assert store.resolve("auto").read_text() == "mid"  # type: ignore[union-attr]
