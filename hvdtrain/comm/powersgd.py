"""PowerSGD gradient compression (Vogels et al., 2019), written once for both frameworks.

Why here and framework-neutral: the torch and TensorFlow adapters must compute the same thing
(and a unit test checks the math with NumPy and a simulated allreduce), so the algorithm is one
generator, ``powersgd_round``, over a tiny ``Ops`` table (matmul, transpose, reshape,
orthogonalise, zeros) that each framework fills in. The generator *yields* the lists it wants
averaged across ranks and is sent the averages back: the real adapters drive it with Horovod's
``grouped_allreduce``, the test drives several simulated ranks in lockstep.

One round, for every gradient that ``cluster.estimate.powersgd_layout`` compresses (viewed as
an n × m matrix, r = min(n, m, rank)); the reference semantics are DDP's ``powerSGD_hook``:

1. error feedback: M = G + E (what earlier rounds lost on this rank);
2. warm start: Q (m × r) is last round's, re-orthogonalised (a seeded random one at first,
   the same on every rank);
3. P = M Q, averaged across ranks together with the uncompressed tensors (vectors, and
   matrices too small for the factors to save bytes), then orthogonalised;
4. Q = Mᵀ P, averaged across ranks; the result is M̂ = P Qᵀ, identical on every rank;
5. E = M − M̂ on this rank: nothing is lost, only deferred (over steps the applied
   gradients plus the ranks' mean error equal the sum of the true average gradients).

State to checkpoint: Q per tensor and the round count (the same on every rank) and E (this
rank's own). The first ``warmup_steps`` rounds are plain full-precision averages.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from hvdtrain.cluster.estimate import powersgd_layout

T = TypeVar("T")  # a framework's tensor type


@dataclass(frozen=True)
class Ops(Generic[T]):
    """The linear algebra one round needs, in one framework."""

    matmul: Callable[[T, T], T]
    transpose: Callable[[T], T]
    reshape: Callable[[T, tuple[int, ...]], T]
    orthogonalise: Callable[[T], T]  # columns orthonormal (reduced QR's Q)


@dataclass(frozen=True)
class Plan:
    """Which of a model's gradients PowerSGD compresses, and how."""

    shapes: tuple[tuple[int, ...], ...]
    layouts: tuple[tuple[int, int, int] | None, ...]  # (n, m, r) or None: sent whole

    @classmethod
    def of(cls, shapes: Sequence[Sequence[int]], rank: int) -> Plan:
        shapes_ = tuple(tuple(int(d) for d in s) for s in shapes)
        return cls(shapes_, tuple(powersgd_layout(s, rank) for s in shapes_))

    @property
    def compressed(self) -> list[int]:
        return [i for i, layout in enumerate(self.layouts) if layout is not None]

    @property
    def compressed_layouts(self) -> list[tuple[int, int, int]]:
        return [layout for layout in self.layouts if layout is not None]

    @property
    def uncompressed(self) -> list[int]:
        return [i for i, layout in enumerate(self.layouts) if layout is None]


def initial_qs(plan: Plan, seed: int) -> list[np.ndarray]:
    """The first Q of every compressed tensor: standard normal from ``seed`` (the same on every
    rank, so no broadcast is needed), float32."""
    rng = np.random.default_rng(seed)
    out = []
    for _, m, r in plan.compressed_layouts:
        out.append(rng.standard_normal((m, r)).astype(np.float32))
    return out


Round = Generator[list[T], list[T], tuple[list[T], list[T], list[T]]]


def powersgd_round(grads: Sequence[T], errors: Sequence[T], qs: Sequence[T], plan: Plan,
                   ops: Ops[T]) -> Round[T]:
    """One compressed averaging of ``grads`` (this rank's, in ``plan`` order). Yields the
    lists to average across ranks; returns (averaged gradients in ``grads``' shapes, the new
    errors, the new Qs), ``errors`` and ``qs`` being in ``plan.compressed`` order."""
    index = plan.compressed
    matrices = []
    for k, (i, (n, m, _)) in enumerate(zip(index, plan.compressed_layouts, strict=True)):
        matrices.append(ops.reshape(grads[i], (n, m)) + errors[k])  # type: ignore[operator]
    warm = [ops.orthogonalise(q) for q in qs]
    ps = [ops.matmul(mat, q) for mat, q in zip(matrices, warm, strict=True)]
    whole = [grads[i] for i in plan.uncompressed]
    first = yield [*ps, *whole]
    ps = [ops.orthogonalise(p) for p in first[:len(ps)]]
    new_qs = yield [ops.matmul(ops.transpose(mat), p) for mat, p in zip(matrices, ps,
                                                                         strict=True)]
    approx = [ops.matmul(p, ops.transpose(q)) for p, q in zip(ps, new_qs, strict=True)]
    new_errors = [mat - a for mat, a in zip(matrices, approx, strict=True)]
    out: list[T] = list(grads)
    for k, i in enumerate(index):
        out[i] = ops.reshape(approx[k], plan.shapes[i])
    for k, i in enumerate(plan.uncompressed):
        out[i] = first[len(ps) + k]
    return out, new_errors, list(new_qs)


def drive(round_: Round[T], average: Callable[[list[T]], list[T]]
          ) -> tuple[list[T], list[T], list[T]]:
    """Run one rank's round with ``average`` (e.g. Horovod's grouped allreduce, op=Average)."""
    try:
        wanted = next(round_)
        while True:
            wanted = round_.send(average(wanted))
    except StopIteration as done:
        return done.value


# -- the numpy backend (tests, reference) ----------------------------------------------------

def _np_orthogonalise(matrix: np.ndarray) -> np.ndarray:
    return np.linalg.qr(matrix)[0]


NUMPY_OPS: Ops[np.ndarray] = Ops(matmul=np.matmul, transpose=np.transpose,
                                 reshape=np.reshape, orthogonalise=_np_orthogonalise)


# -- checkpointed state, the same encoding for both frameworks -------------------------------

def encode(arrays: Sequence[np.ndarray]) -> list[dict[str, Any]]:
    """Float32 arrays as JSON-able dicts (exact: their bytes in base64)."""
    return [{"shape": list(a.shape),
             "data": base64.b64encode(np.ascontiguousarray(a, np.float32).tobytes()).decode()}
            for a in arrays]


def decode(items: Sequence[dict[str, Any]]) -> list[np.ndarray]:
    return [np.frombuffer(base64.b64decode(item["data"]), dtype=np.float32)
            .reshape(item["shape"]).copy() for item in items]
