"""One framework's bf16 transport and PowerSGD ops on two simulated ranks (threads, a fake
Horovod that moves NumPy copies), against the NumPy reference. Run as a subprocess (one
framework per process) by test_compression_ops.py; prints one JSON object."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from hvdtrain.comm.powersgd import NUMPY_OPS, Ops, Plan, initial_qs, powersgd_round

WORLD = 2


class FakeHvd:
    """``size``, ``alltoall`` (no splits) and ``allgather`` between threads."""

    def __init__(self, rank: int, slots: dict[int, Any], barrier: threading.Barrier,
                 to_numpy: Callable[[Any], np.ndarray], to_tensor: Callable[[Any], Any]) -> None:
        self.rank, self.slots, self.barrier = rank, slots, barrier
        self.to_numpy, self.to_tensor = to_numpy, to_tensor
        self.names: list[str | None] = []

    def size(self) -> int:
        return WORLD

    def _exchange(self, mine: np.ndarray) -> list[np.ndarray]:
        self.slots[self.rank] = mine
        self.barrier.wait()
        everyone = [self.slots[r] for r in range(WORLD)]
        self.barrier.wait()
        return everyone

    def alltoall(self, tensor: Any, name: str | None = None) -> Any:
        rows = self._exchange(self.to_numpy(tensor))
        return self.to_tensor(np.stack([rows[r][self.rank] for r in range(WORLD)]))

    def allgather(self, tensor: Any, name: str | None = None) -> Any:
        return self.to_tensor(np.concatenate(self._exchange(self.to_numpy(tensor))))

    # asynchronous forms: exchanged at once (every rank starts them in the same order),
    # the handle is the result; ``names`` records what was started, in order
    def alltoall_async(self, tensor: Any, name: str | None = None) -> Any:
        self.names.append(name)
        return self.alltoall(tensor), None

    def allgather_async(self, tensor: Any, name: str | None = None) -> Any:
        self.names.append(name)
        return self.allgather(tensor)

    def synchronize(self, handle: Any) -> Any:
        return handle


def lockstep(ops: Ops[Any], grads: list[list[Any]], plan: Plan,
             to_numpy: Callable[[Any], np.ndarray],
             to_tensor: Callable[[Any], Any]) -> list[list[np.ndarray]]:
    """Each rank's averaged gradients and new errors after one PowerSGD round."""
    errors = [to_tensor(np.zeros((n, m), np.float32)) for n, m, _ in plan.compressed_layouts]
    qs = [to_tensor(q) for q in initial_qs(plan, 3)]
    rounds = [powersgd_round(g, errors, qs, plan, ops) for g in grads]
    wanted = [next(r) for r in rounds]
    while True:
        mean = [np.mean([to_numpy(t) for t in parts], axis=0).astype(np.float32)
                for parts in zip(*wanted, strict=True)]
        done, wanted = [], []
        for r in rounds:
            try:
                wanted.append(r.send([to_tensor(a) for a in mean]))
            except StopIteration as stop:
                out, new_errors, _ = stop.value
                done.append([to_numpy(t) for t in [*out, *new_errors]])
        if done:
            return done


def bucketed(torch_compression: Any, hvd: FakeHvd, local: list[np.ndarray],
             whole: list[np.ndarray]) -> dict[str, Any]:
    """torch's ``Bf16Torch`` in buckets of 200 bytes over parameters whose gradients are
    ``local``, the last one unused by the backward pass (its bucket starts in ``average``):
    which buckets left during the backward pass, and whether the result equals ``whole``
    (one exchange of everything) exactly."""
    import torch

    hvd.names.clear()
    params = [torch.nn.Parameter(torch.zeros(g.shape)) for g in local]
    reducer = torch_compression.Bf16Torch(torch, hvd, params, bucket_bytes=200)
    reducer.before_backward(final=False)  # an earlier micro-batch: nothing may start
    sum((p * 0).sum() for p in params[:-1]).backward()
    started_early = len(hvd.names)
    for p in params[:-1]:
        p.grad = None
    reducer.before_backward(final=True)
    sum((p * torch.from_numpy(g)).sum() for p, g in zip(params, local, strict=True)
        if p is not params[-1]).backward()
    in_backward = list(hvd.names)
    params[-1].grad = torch.zeros_like(params[-1])  # as the adapter fills an unused one
    out = reducer.average([p.grad for p in params[:-1]] + [params[-1].grad])
    return {"buckets": [list(b) for b in reducer.buckets], "started_early": started_early,
            "started_in_backward": in_backward, "started_in_all": list(hvd.names),
            "equal_to_whole": all(np.array_equal(o.numpy(), w)
                                  for o, w in zip(out[:-1], whole[:-1], strict=True))}


def main(framework: str) -> None:
    rng = np.random.default_rng(0)
    shapes = [(3, 5), (40, 7), (9,), (301,)]  # 635 elements: the last chunk is padded
    # 1e30: far beyond fp16's range, inside bf16's
    local = [[(rng.standard_normal(s) * 1e30).astype(np.float32) for s in shapes]
             for _ in range(WORLD)]
    if framework == "torch":
        import torch

        from hvdtrain.comm import torch_compression

        def to_tensor(a: Any) -> Any:
            return torch.from_numpy(np.array(a))

        def to_numpy(t: Any) -> np.ndarray:
            return np.asarray(t.numpy())

        def rounded(a: np.ndarray) -> np.ndarray:  # through bf16 and back
            return np.asarray(to_tensor(a).to(torch.bfloat16).float().numpy())

        def average(hvd: Any, grads: list[Any]) -> list[Any]:
            return torch_compression.bf16_average(torch, hvd, grads, "check")

        # two ranks: one allgather of both bf16 gradients, the fp32 sum not rounded again
        final_rounding = False

        ops = torch_compression.torch_ops(torch)
    else:
        import tensorflow as tf

        from hvdtrain.comm import tf_compression

        def to_tensor(a: Any) -> Any:
            return tf.constant(np.array(a))

        def to_numpy(t: Any) -> np.ndarray:
            return np.asarray(t.numpy())

        def rounded(a: np.ndarray) -> np.ndarray:
            return np.asarray(tf.cast(tf.cast(tf.constant(a), tf.bfloat16), tf.float32).numpy())

        def average(hvd: Any, grads: list[Any]) -> list[Any]:
            return tf_compression.bf16_average(hvd, WORLD, grads)

        final_rounding = True  # reduce-scatter, then the averaged chunks allgathered in bf16

        ops = tf_compression.tf_ops()

    slots: dict[int, Any] = {}
    barrier = threading.Barrier(WORLD)
    results: dict[int, list[np.ndarray]] = {}

    buckets: dict[int, dict[str, Any]] = {}

    def rank(r: int) -> None:
        hvd = FakeHvd(r, slots, barrier, to_numpy, to_tensor)
        results[r] = [to_numpy(t) for t in average(hvd, [to_tensor(g) for g in local[r]])]
        if framework == "torch":
            buckets[r] = bucketed(torch_compression, hvd, local[r], results[r])

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(WORLD)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = [(rounded if final_rounding else np.asarray)((rounded(a) + rounded(b)) / WORLD)
                for a, b in zip(*local, strict=True)]
    true = [(a.astype(np.float64) + b) / WORLD for a, b in zip(*local, strict=True)]
    scale = [np.maximum(np.abs(a), np.abs(b)) for a, b in zip(*local, strict=True)]
    bf16 = {
        "shapes_kept": all(x.shape == s for x, s in zip(results[0], shapes, strict=True)),
        "identical_on_ranks": all(np.array_equal(a, b)
                                  for a, b in zip(results[0], results[1], strict=True)),
        "max_diff_from_bf16_reference": max(float(np.max(np.abs(x - e)))
                                            for x, e in zip(results[0], expected, strict=True)),
        "finite": all(bool(np.isfinite(x).all()) for x in results[0]),
        # of the larger input: each bf16 rounding costs at most 2^-8 of its value
        "max_relative_error": max(float(np.max(np.abs(x - t) / m))
                                  for x, t, m in zip(results[0], true, scale, strict=True)),
    }
    # PowerSGD: this framework's ops against NumPy's, on the same inputs
    plan = Plan.of([(40, 7), (6, 30), (9,)], 2)
    grads = [[rng.standard_normal(s).astype(np.float32) for s in plan.shapes]
             for _ in range(WORLD)]
    mine = lockstep(ops, [[to_tensor(g) for g in gs] for gs in grads], plan, to_numpy,
                    to_tensor)
    reference = lockstep(NUMPY_OPS, grads, plan, np.asarray, np.asarray)
    powersgd = {
        "compressed": plan.compressed,
        "max_diff_from_numpy": max(float(np.max(np.abs(a - b)))
                                   for rank_a, rank_b in zip(mine, reference, strict=True)
                                   for a, b in zip(rank_a, rank_b, strict=True)),
    }
    print(json.dumps({"bf16": bf16, "powersgd": powersgd, "buckets": buckets.get(0)}))


if __name__ == "__main__":
    main(sys.argv[1])
