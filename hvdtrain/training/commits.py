"""What the loop commits and when it stops, kept apart from the loop itself.

* ``StopRequest`` / ``agree_to_stop``: a signal handler in one rank sets the request; every
  ``STOP_CHECK_STEPS`` steps the ranks agree on it with one tiny allreduce, so all stop after
  the same step (a stop is a collective decision, never a rank's own).
* ``raise_agreed``: an error every rank agreed on (rank 0's, broadcast, e.g. a full disk)
  is raised by rank 0 first: mpirun ends the job at the first non-zero exit and the launcher
  names the first rank that failed, so rank 0's line, already on the terminal, is the one.
* ``SampleLog``: rank 0's record, for exactly-once checks (``--record-samples``), of which
  training samples each commit point holds.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np

from hvdtrain.errors import HvdtrainError
from hvdtrain.types import Collectives

STOP_CHECK_STEPS = 8  # steps between the ranks' agreement on a stop request (one tiny allreduce)
AGREED_ERROR_GRACE_S = 1.0  # ranks other than 0 raise an agreed error this much later


@dataclass
class StopRequest:
    """Set by a signal handler in the rank (``worker``); read by the loop at agreed steps."""

    signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self.signal_name is not None


def agree_to_stop(comm: Collectives, stop: StopRequest, name: str) -> str | None:
    """One tiny allreduce: the signal some rank was stopped by, on every rank, or None."""
    local = np.array([stop.signal_name == "SIGUSR1", stop.signal_name == "SIGTERM",
                      stop.requested], dtype=np.float64)
    usr1, term, anyone = comm.allreduce_sum(local, name=name)
    if not anyone:
        return None
    return "SIGUSR1" if usr1 else "SIGTERM" if term else "a stop request"


def raise_agreed(comm: Collectives, error: HvdtrainError) -> NoReturn:
    """Raise ``error``, which every rank holds (rank 0's, broadcast): rank 0 at once, the
    others a moment later, so that rank 0 leaves first (see the module docstring)."""
    if comm.rank != 0:
        time.sleep(AGREED_ERROR_GRACE_S)
    raise error


class SampleLog:
    """``LoopOptions.record_samples``: rank 0's record of the training-set indices each commit
    point holds (a checkpoint written, an elastic commit, the final model), per epoch, in
    ``samples/committed.jsonl``. Rank 0 knows every rank's batches (``consumed_after``), so one
    writer records them, right after the commit, before any collective that a dead peer could
    block; a run resumed from that commit point continues from the same position."""

    def __init__(self, run_dir: Path, n: int, epoch: int, consumed: np.ndarray | None) -> None:
        self.path = run_dir / "samples" / "committed.jsonl"
        self.n, self.epoch = n, epoch
        self.mask = np.zeros(n, dtype=bool) if consumed is None else consumed.copy()

    def commit(self, epoch: int, consumed: np.ndarray | None) -> None:
        """The model now holds every epoch before ``epoch`` and, of ``epoch``, ``consumed``."""
        lines = []
        while self.epoch < epoch:
            lines.append((self.epoch, np.flatnonzero(~self.mask)))
            self.epoch, self.mask = self.epoch + 1, np.zeros(self.n, dtype=bool)
        if consumed is not None and self.epoch == epoch:
            lines.append((epoch, np.flatnonzero(consumed & ~self.mask)))
            self.mask |= consumed
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as out:
            for done_epoch, indices in lines:
                if len(indices):
                    out.write(json.dumps({"epoch": done_epoch,
                                          "indices": [int(i) for i in indices]}) + "\n")
