"""When an embedding's gradient travels as the rows a step touched instead of the whole matrix.

Why: a language model's word-embedding matrix (BERT's 30,522 × hidden) is most of its gradient
bytes (73 % of a BERT-small's 42.6 MiB) and it is the last gradient the backward pass produces,
so no overlap can hide its allreduce (``hvdtrain bench overlap``, docs/BENCHMARKS.md). Yet a
step touches at most batch × sequence rows of it and every other row of the gradient is exactly
zero. Sending each rank's touched rows with their indices (an allgather; every rank then adds
them up) is exact, not a compression, and sends fewer bytes as long as all ranks' rows together
stay well below the vocabulary; with many ranks the dense ring wins again, so ``auto`` asks the
byte count. Framework-neutral: the torch adapter applies it, ``plan`` and tests read it.
"""

from __future__ import annotations

from dataclasses import dataclass

INDEX_BYTES = 8  # an int64 row index travels with every row
VALUE_BYTES = 4  # float32
# auto sends rows only when they are at most this share of the dense ring's bytes: a clear win
# that leaves room for the allgather's own costs (coalescing, unequal row counts per rank)
AUTO_MAX_SHARE = 0.5


def dense_ring_bytes(rows: int, width: int, world: int) -> float:
    """Bytes each rank sends in a ring allreduce of a ``rows`` × ``width`` float32 matrix."""
    return 2 * (world - 1) / world * rows * width * VALUE_BYTES if world > 1 else 0.0


def touched_rows_bytes(touched: int, width: int, world: int) -> float:
    """Bytes each rank sends in a ring allgather of ``touched`` rows (with indices) per rank."""
    return (world - 1) * touched * (width * VALUE_BYTES + INDEX_BYTES)


@dataclass(frozen=True)
class Choice:
    """The decision for one embedding matrix, with the bytes behind it (for the log line)."""

    rows: int  # the vocabulary
    width: int
    touched: int  # at most this many rows per rank and optimizer step
    world: int
    sparse: bool

    def describe(self) -> str:
        dense = dense_ring_bytes(self.rows, self.width, self.world) / 2**20
        rows = touched_rows_bytes(self.touched, self.width, self.world) / 2**20
        return (f"{self.rows}×{self.width}: at most {self.touched} rows a step per rank, "
                f"{rows:.1f} MiB sent as rows against {dense:.1f} MiB dense")


def choose(mode: str, rows: int, width: int, touched: int, world: int) -> Choice:
    """``mode`` is ``--sparse-embeddings``: on, off, or auto (rows when one rank sends at most
    ``AUTO_MAX_SHARE`` of the dense ring's bytes; never on one rank, where nothing is sent)."""
    touched = max(1, min(touched, rows))
    if mode == "on":
        sparse = True
    elif mode == "off":
        sparse = False
    else:
        sparse = world > 1 and touched_rows_bytes(touched, width, world) <= \
            AUTO_MAX_SHARE * dense_ring_bytes(rows, width, world)
    return Choice(rows, width, touched, world, sparse)
