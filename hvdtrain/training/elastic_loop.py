"""Horovod elastic for hvdtrain's framework-free loop (``hvdtrain train --elastic``).

The loop runs inside Horovod's elastic wrapper (``horovod.common.elastic.run_fn``, with this
binding's shutdown + init as the reset). ``LoopState`` is the ``horovod.common.elastic.State``
it needs:

* **commit** (``LoopOptions.on_commit``: every ``--commit-every-steps`` steps and at every
  epoch's end, on every rank at the same step): keep the loop's ``Progress`` (epoch, the set of
  samples of this epoch already trained, best loss...) and an in-memory copy of model and
  optimizer state (``adapter.snapshot``), then ask the driver whether hosts changed;
* **restore** (a rank failed in a collective: ``HorovodInternalError``): back to that copy,
  undoing half-done steps;
* **sync** (after every reset, and at the start): model and optimizer from the new rank 0
  (``adapter.broadcast_state``), then its ``Progress`` and the record of resets.

Re-entering ``train`` with the synced ``Progress`` re-shards the samples the epoch has not yet
trained over the new world size (``sharding``) and the lr follows ``comm.size``, so no sample
is skipped or repeated whatever the membership change. Epoch ends still write checkpoints, so
a job that fails completely (below ``--min-np`` past ``--elastic-timeout``) resumes with
``--resume latest``.

Known Horovod elastic failure modes, worked around here rather than inherited:

* horovod#3494 (deadlock when hosts are removed and others join while the survivors wait):
  Horovod skips the sync after a removal; survivors and newcomers then issue different
  collectives. Every ``HostsUpdatedInterrupt`` is re-raised with ``skip_sync=False``: every
  reset syncs.
* horovod#2995 (one failing ``state.sync()`` ends the job): any error inside ``sync`` is
  raised as ``HorovodInternalError``, so the wrapper restores and re-forms instead of dying;
  TensorFlow's op errors from a lost peer are mapped the same way in the training function.
* horovod#2844 (wrong epoch after scale-up): the epoch is never a counter kept per worker;
  it is part of the ``Progress`` every rank receives from rank 0 at each sync.
* No collective runs before the wrapper (``adapter.setup(..., broadcast=False)``): a rank that
  joins a running job would otherwise broadcast while the others sync (horovod#2189).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from horovod.common.elastic import State, run_fn
from horovod.common.exceptions import HorovodInternalError, HostsUpdatedInterrupt

from hvdtrain.atomic import atomic_write_text
from hvdtrain.comm import Comm
from hvdtrain.config import TrainConfig
from hvdtrain.errors import ConfigError
from hvdtrain.launch.protocol import claim_voice
from hvdtrain.log import logger
from hvdtrain.training.checkpoint import CheckpointStore, refuse_to_overwrite
from hvdtrain.training.loop import LoopOptions, Progress, on_chief, resume_progress, train
from hvdtrain.types import Dataset, FrameworkAdapter

RESETS_FILE = "elastic.json"  # rank 0's record of every reset, kept up to date as they happen


def is_lost_peer(exc: BaseException) -> bool:
    """A framework error that means a collective failed because a rank went away (TensorFlow
    raises its own op errors for Horovod's; torch raises ``HorovodInternalError`` itself)."""
    text = str(exc).lower()
    return (type(exc).__module__.startswith("tensorflow")
            and ("horovod" in text or "gloo" in text))


class LoopState(State):  # Horovod's base class is untyped
    """Horovod elastic state of the loop: adapter state in memory plus the loop's progress."""

    def __init__(self, adapter: FrameworkAdapter) -> None:
        self.adapter = adapter
        self.comm = adapter.comm
        self.progress: Progress | None = None  # None: nothing committed, start as configured
        self.resets: list[dict[str, Any]] = []
        self.reason = "a rank failed"  # why the next reset happens (set as it is raised)
        self._saved_progress: Progress | None = None
        self._snapshot: Any = None
        self._size = self.comm.size  # the world size before a reset
        self.announced = 0  # resets rank 0 has reported on the terminal
        super().__init__(bcast_object=self.comm.broadcast_object, get_rank=lambda: self.comm.rank)

    def commit_progress(self, progress: Progress) -> None:
        """The loop's ``on_commit``: keep ``progress`` and the state, then check for host
        changes (``HostsUpdatedInterrupt`` on every rank at this same step)."""
        self.progress = progress
        self.commit()

    def save(self) -> None:
        self._snapshot = self.adapter.snapshot()
        self._saved_progress = self.progress

    def restore(self) -> None:
        if self._snapshot is not None:
            self.adapter.restore_snapshot(self._snapshot)
        self.progress = self._saved_progress

    def reset(self) -> None:
        """After Horovod re-initialised (the new size is known), before the sync."""
        self.resets.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                            "reason": self.reason, "old_world_size": self._size,
                            "new_world_size": self.comm.size})
        self._size = self.comm.size
        self.reason = "a rank failed"

    def sync(self) -> None:
        """Everything from rank 0 (the oldest surviving rank). A peer lost in here is handled
        like one lost in training, by restoring and re-forming (horovod#2995)."""
        try:
            self.adapter.broadcast_state()
            self.progress, self.resets = self.comm.broadcast_object(
                (self.progress, self.resets))
        except Exception as exc:
            if is_lost_peer(exc):  # TensorFlow's op error: handled like torch's
                raise HorovodInternalError(exc) from exc
            raise
        self._size = self.comm.size
        self.save()  # newcomers and survivors now restore to the same state


def _record(run_dir: Path, resets: list[dict[str, Any]], wall_seconds: float | None = None
            ) -> None:
    """Rank 0: the resets so far in ``elastic.json`` and, at the end, in ``summary.json``
    with the wall time of the whole job (the loop counts from its last re-entry)."""
    atomic_write_text(run_dir / RESETS_FILE, json.dumps(resets, indent=2))
    summary = run_dir / "summary.json"
    if wall_seconds is not None and summary.is_file():
        data = json.loads(summary.read_text())
        data["elastic_resets"] = resets
        data["wall_seconds"] = wall_seconds
        atomic_write_text(summary, json.dumps(data, indent=2))


def _announce(state: LoopState, n_train: int) -> None:
    """Rank 0 says what happened on a membership change and where training continues."""
    progress = state.progress or Progress()
    for reset in state.resets[state.announced:]:
        done = 0 if progress.consumed is None else int(progress.consumed.sum())
        reset.update(epoch=progress.epoch, samples_into_epoch=done)
        where = (f"epoch {progress.epoch + 1} at sample {done} of {n_train}" if done
                 else f"the start of epoch {progress.epoch + 1}")
        logger.warning("hosts changed (%s): %s -> %s ranks, continuing from %s (the last "
                       "commit)", reset["reason"], reset["old_world_size"],
                       reset["new_world_size"], where)
    state.announced = len(state.resets)


def train_elastic(adapter: FrameworkAdapter, config: TrainConfig, data: Dataset, run_dir: Path,
                  options: LoopOptions, place_ranks: Callable[[], list[dict[str, Any]]],
                  commit_every: int) -> dict[str, Any]:
    """Run the loop under Horovod elastic until it finishes (on whatever ranks are left).
    ``place_ranks``: a collective that gathers (and rank 0 prints) where every rank runs."""
    comm = adapter.comm
    if not isinstance(comm, Comm):  # a test double cannot re-form
        raise ConfigError("--elastic needs Horovod's own collectives (hvdtrain.comm.Comm)")
    state = LoopState(adapter)
    started = time.monotonic()  # rank 0 after a reset is one of the oldest ranks

    def body(state: LoopState) -> dict[str, Any]:
        try:
            return run_once(state)
        except HostsUpdatedInterrupt as exc:
            state.reason = "hosts removed" if exc.skip_sync else "hosts added or changed"
            raise HostsUpdatedInterrupt(False) from exc  # always sync (horovod#3494)
        except HorovodInternalError:
            state.reason = "a rank failed"
            raise
        except Exception as exc:
            if is_lost_peer(exc):
                state.reason = "a rank failed"
                raise HorovodInternalError(exc) from exc
            raise

    def run_once(state: LoopState) -> dict[str, Any]:
        claim_voice(comm.rank == 0)  # rank 0 alone is shown, whichever process it is now
        placed = place_ranks()
        if comm.rank == 0:
            _announce(state, len(data.x_train))
            if state.resets:
                _record(run_dir, state.resets)
        start = state.progress
        if start is None:  # the first start: a fresh run, or --resume
            on_chief(comm, lambda: refuse_to_overwrite(run_dir, config.resume))
            store = CheckpointStore(run_dir / "checkpoints", config.keep_checkpoints)
            start = (resume_progress(adapter, comm, config, store, len(data.x_train))
                     if config.resume else Progress())
            state.commit_progress(start)  # a reset before the first commit starts from here
        # a copy: the loop clears its start's sampler position, the state must keep it
        summary = train(adapter, comm, config, data, run_dir,
                        replace(options, start=replace(start), commit_every=commit_every,
                                on_commit=state.commit_progress), placed)
        if comm.rank == 0:
            summary.update(elastic_resets=state.resets,
                           wall_seconds=time.monotonic() - started)
            _record(run_dir, state.resets, summary["wall_seconds"])
        return summary

    result: dict[str, Any] = run_fn(body, comm.reinitialise)(state)
    return result
