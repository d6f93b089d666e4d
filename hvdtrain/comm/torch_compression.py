"""bf16 and PowerSGD gradient averaging for the torch adapter.

Why not a Horovod ``Compressor`` in ``DistributedOptimizer``: Horovod 0.28.1 has no bfloat16
at all (its allreduce refuses ``torch.bfloat16``; no reduction kernel, MPI or Gloo, sums it;
hvdtrain's own build adds an MPI one, below), and PowerSGD's two rounds (P, then Q from the
averaged P) do not fit a per-tensor compress/decompress. Both are therefore driven here, once
per optimizer step (the adapter then uses the plain torch optimizer): bf16 in buckets that
start during the step's last backward pass (``Bf16Torch``), PowerSGD after it.

**bf16 without a bf16 sum**: a bucket's gradients, cast into one bf16 buffer the bucket keeps
from step to step (no float32 copy on the way), travel as bfloat16 bit patterns (int16, which
Horovod moves) in a reduce-scatter made of an ``alltoall`` (rank i gets every rank's i-th
chunk) and a sum in float32 in rank order, then an ``allgather`` of the averaged chunks, again
in bfloat16. Those are a bf16 ring allreduce's bytes (2(n−1)/n · 2 bytes per element each way),
with the sum exact in float32 and the result identical on every rank. bfloat16 has float32's
range: no pre-scaling, no overflow retry (unlike fp16). At exactly two ranks the same bytes go
in one collective instead (an ``allgather`` of both bf16 gradients). The average is written
back into the gradients it was asked for.

**bf16 with a bf16 sum**: the Horovod that ``scripts/build_horovod.py`` builds sums bfloat16
in its MPI allreduce (float32 add, rounded to bf16 at each step of the reduction, as DDP's bf16
hook does over Gloo). Under the MPI controller a bucket then takes one in-place allreduce at
any world size, fused by Horovod like float32's, and the sum is divided in float32: at 3+
ranks instead of two collectives, at two instead of the allgather (the same bytes, with no
output to allocate and no float32 sum on the host: 1.03 and 1.08 of it between hosts, in
docs/BENCHMARKS.md). A stock Horovod or the Gloo controller keeps the allgather (two ranks)
or the alltoall and allgather.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from hvdtrain.comm.powersgd import Ops, Plan, decode, drive, encode, initial_qs, powersgd_round
from hvdtrain.log import logger

BUCKET_BYTES = 4 * 2**20
"""Float32 gradient bytes per bf16 bucket, filled in backward order. DDP's layout (a first
bucket of 1 MB, then 25 MB) starts the first collective early; at 4 MiB the MLP of
``bench train`` gets DDP's two buckets (its 4 MiB weight with what follows it, then the first
layer) and the encoder's 11 M dense parameters about ten, each one Horovod negotiation."""


def native_bf16_sum(hvd: ModuleType) -> bool:
    """Whether Horovod sums bfloat16 itself: hvdtrain's build under the MPI controller."""
    mpi_lib = getattr(getattr(hvd, "mpi_ops", None), "mpi_lib", None)
    if not hasattr(mpi_lib, "horovod_torch_allreduce_async_torch_BFloat16Tensor"):
        return False
    return bool(hvd.mpi_enabled())


def _sums_bf16(hvd: ModuleType, tensors: list[Any]) -> bool:
    """Whether Horovod sums these tensors' bf16 itself: our build's sum is on the CPU only."""
    return bool(tensors) and tensors[0].device.type == "cpu" and native_bf16_sum(hvd)


def bf16_average(torch: Any, hvd: ModuleType, grads: list[Any], name: str) -> list[Any]:
    """The average of ``grads`` across ranks, sent as bfloat16 (see the module notes), in
    new tensors."""
    with torch.no_grad():
        exchange = _Bf16Exchange(torch, hvd, grads, name, _sums_bf16(hvd, grads))
        averaged = [torch.empty_like(g) for g in grads]
        exchange.finish_into(exchange.finish_first(), averaged)
        return averaged


class _Bf16Exchange:
    """One bucket's bf16 exchange, started at once (``hvd.*_async``) and finished in two
    halves, so that many buckets can be in flight together: ``finish_first`` waits for the
    first collective (at 3+ ranks without Horovod's bf16 sum it then starts the allgather of
    this rank's averaged chunk), ``finish_into`` for the second, and writes the average into
    the tensors it is given. The gradients are cast straight into ``wire`` (a bf16 buffer a
    bucket keeps from step to step; a new one when None): no float32 copy of the bucket is
    made on the way. ``sums_bf16``: Horovod sums bf16 here (``_sums_bf16``, decided once by
    the caller, not per bucket and step)."""

    def __init__(self, torch: Any, hvd: ModuleType, grads: list[Any], name: str,
                 sums_bf16: bool, wire: Any = None) -> None:
        self.torch, self.hvd, self.name = torch, hvd, name
        self.size = int(hvd.size())
        self.summed = sums_bf16  # one allreduce in Horovod, at any world size
        if wire is None:
            scattered = self.size > 2 and not self.summed  # a row per rank for the alltoall
            wire = _new_wire(torch, self.size if scattered else 1,
                             sum(g.numel() for g in grads), grads[0].device)
        self.wire = wire  # (Horovod's handle keeps it alive too until synchronize)
        flat = wire.view(-1)
        for g, span in _spans(grads):
            flat[span].copy_(g.reshape(-1))
        if self.summed:  # summed in bf16 by Horovod, in place
            self.handle = hvd.allreduce_async_(wire, op=hvd.Sum, name=f"{name}.sum")
        elif self.size == 2:  # both whole bf16 gradients in one allgather (module notes)
            self.handle = hvd.allgather_async(wire.view(torch.int16), name=f"{name}.both")
        else:  # reduce-scatter as an alltoall: row i is rank i's chunk for me
            self.handle = hvd.alltoall_async(wire.view(torch.int16), name=f"{name}.scatter")

    def finish_first(self) -> Any:
        torch, hvd = self.torch, self.hvd
        if self.summed:  # the bf16 sum: nothing more to send
            return hvd.synchronize(self.handle)
        if self.size == 2:  # both gradients, rank 0's first
            return hvd.synchronize(self.handle).view(torch.bfloat16)
        got, _ = hvd.synchronize(self.handle)
        mine = got.view(torch.bfloat16).float().sum(0) / self.size
        return hvd.allgather_async(mine.to(torch.bfloat16).view(torch.int16).unsqueeze(0),
                                   name=f"{self.name}.gather")

    def finish_into(self, first: Any, targets: list[Any]) -> None:
        """The average written into ``targets`` (shaped as the bucket's gradients; they may be
        those gradients: nothing is read from them): Horovod's bf16 sum divided in float32;
        without it, at two ranks both gradients summed in float32 in rank order, not rounded
        to bf16 again, and at 3+ the allgathered bf16 averages."""
        torch = self.torch
        if self.summed:
            summed = first.reshape(-1)
            for t, span in _spans(targets):
                t.copy_(summed[span].view(t.shape)).div_(self.size)
            return
        if self.size == 2:
            for t, span in _spans(targets):
                mine, other = first[0, span].view(t.shape), first[1, span].view(t.shape)
                if t.dtype == torch.float32:  # in place: no temporary
                    t.copy_(mine).add_(other).mul_(0.5)
                else:
                    t.copy_((mine.float() + other) * 0.5)
            return
        averaged = self.hvd.synchronize(first).view(torch.bfloat16).reshape(-1)
        for t, span in _spans(targets):
            t.copy_(averaged[span].view(t.shape))


def _spans(tensors: list[Any]) -> Iterator[tuple[Any, slice]]:
    """Each tensor with its place in a flat buffer that holds them all, in order."""
    start = 0
    for t in tensors:
        yield t, slice(start, start + t.numel())
        start += t.numel()


def _new_wire(torch: Any, rows: int, total: int, device: Any) -> Any:
    """The bf16 send buffer of a bucket of ``total`` elements in ``rows`` rows of
    ceil(total / rows): one row for an allgather or an allreduce, a row per rank for the
    alltoall (the padding stays zero)."""
    chunk = max(1, math.ceil(total / rows))
    return torch.zeros(rows, chunk, dtype=torch.bfloat16, device=device)


def torch_ops(torch: Any) -> Ops[Any]:
    return Ops(matmul=torch.matmul, transpose=lambda t: t.t(),
               reshape=lambda t, shape: t.reshape(shape),
               orthogonalise=lambda p: torch.linalg.qr(p).Q)


class PowerSGDTorch:
    """PowerSGD state for one model (``comm.powersgd``): Q per compressed tensor, this rank's
    error buffers, the number of rounds so far (the first ``warmup_steps`` full precision)."""

    def __init__(self, torch: Any, hvd: ModuleType, shapes: list[tuple[int, ...]], rank: int,
                 warmup_steps: int, seed: int) -> None:
        self.torch, self.hvd = torch, hvd
        self.plan = Plan.of(shapes, rank)
        self.warmup_steps = warmup_steps
        self.ops = torch_ops(torch)
        self.steps = 0
        self.qs = [torch.from_numpy(q) for q in initial_qs(self.plan, seed)]
        self.errors = [torch.zeros(n, m) for n, m, _ in self.plan.compressed_layouts]

    def before_backward(self, final: bool) -> None:
        """PowerSGD's rounds need every P before any Q: they run in ``average``."""

    def _average(self, tensors: list[Any], name: str) -> list[Any]:
        # fixed names: Horovod's response cache then knows every step's collectives
        if not tensors:
            return []
        return list(self.hvd.grouped_allreduce(tensors, op=self.hvd.Average, name=name))

    def average(self, grads: list[Any]) -> list[Any]:
        torch = self.torch
        with torch.no_grad():
            self.steps += 1
            if self.hvd.size() == 1:  # nothing to send: the plain optimizer's gradient
                return grads
            if self.steps <= self.warmup_steps:
                return self._average(grads, "hvdtrain.powersgd.full")
            grads = [g.float() for g in grads]
            if grads and self.qs and self.qs[0].device != grads[0].device:  # a GPU's
                self.qs = [q.to(grads[0].device) for q in self.qs]
                self.errors = [e.to(grads[0].device) for e in self.errors]
            names = iter(("hvdtrain.powersgd.p", "hvdtrain.powersgd.q"))
            out, errors, qs = drive(powersgd_round(grads, self.errors, self.qs, self.plan,
                                                   self.ops),
                                    lambda ts: self._average(ts, next(names)))
            # a NaN/inf gradient on any rank makes every rank's Q non-finite: then no rank
            # keeps this round's state (the adapter skips the step, training goes on)
            if not qs or bool(torch.isfinite(torch.stack([q.sum() for q in qs]).sum())):
                self.errors, self.qs = errors, qs
            return out

    # -- checkpointed state -----------------------------------------------------------------
    def shared_state(self) -> dict[str, Any]:
        """The same on every rank: rank 0's checkpoint holds it."""
        return {"steps": self.steps, "qs": encode([q.cpu().numpy() for q in self.qs])}

    def load_shared_state(self, state: dict[str, Any]) -> None:
        qs = decode(state["qs"])
        self.steps = int(state["steps"])  # the warm-up stays over
        if [tuple(q.shape) for q in qs] != [tuple(q.shape) for q in self.qs]:
            # other matrices compressed: another --powersgd-rank, or --sparse-embeddings auto
            # choosing otherwise at another world size. Q is a warm start and the error
            # buffers (checked in load_local_state) belong to it: both start afresh.
            if self.hvd.rank() == 0:
                logger.warning("PowerSGD's saved factors are for other matrices (another "
                               "--powersgd-rank or world size): they start afresh")
            return
        self.qs = [self.torch.from_numpy(q) for q in qs]

    def local_state(self) -> list[dict[str, Any]]:
        """This rank's error buffers (every rank's go into the checkpoint)."""
        return encode([e.cpu().numpy() for e in self.errors])

    def load_local_state(self, items: list[dict[str, Any]]) -> None:
        errors = decode(items)
        if [e.shape for e in errors] == [tuple(e.shape) for e in self.errors]:
            self.errors = [self.torch.from_numpy(e) for e in errors]


class Bf16Torch:
    """bf16 averaging in buckets (``BUCKET_BYTES`` each, in backward order) that leave during
    the backward pass: a post-accumulate-grad hook on every parameter starts a bucket's
    exchange as soon as its last gradient of the step's final backward pass is accumulated
    (``before_backward(final=True)``), so it travels while the rest of the backward pass is
    computed, as DDP's buckets do. A bucket not started then (an unused parameter, an
    accumulation cut short at an epoch's end) starts in ``average``. Each element is summed
    in float32 in rank order whichever bucket carries it: the result is the same as one
    exchange of the whole gradient (``bf16_average``)."""

    def __init__(self, torch: Any, hvd: ModuleType, params: list[Any],
                 bucket_bytes: int = BUCKET_BYTES) -> None:
        self.torch, self.hvd = torch, hvd
        self.steps = 0
        self.params = params
        self.buckets = bucket_layout([p.numel() * 4 for p in params], bucket_bytes)
        self.armed = False
        self.ready: list[set[int]] = []  # per bucket: which of its gradients are ready
        self.started: dict[int, _Bf16Exchange] = {}
        self.wires: dict[tuple[int, int], Any] = {}  # (bucket, ranks): its bf16 send buffer
        self._forget()
        self.sums_bf16 = _sums_bf16(hvd, params)
        if params and hvd.size() > 2 and not self.sums_bf16 and hvd.rank() == 0:
            logger.info("bf16: this Horovod cannot sum bfloat16 (a stock build, or the Gloo "
                        "controller): each bucket takes an alltoall and an allgather, not "
                        "one allreduce")
        if params and hvd.size() > 1:  # nothing to send on one rank
            bucket_of = {i: b for b, members in enumerate(self.buckets) for i in members}
            for index, p in enumerate(params):
                p.register_post_accumulate_grad_hook(self._hook(index, bucket_of[index]))

    def _hook(self, index: int, bucket: int) -> Any:
        def ready(_: Any) -> None:
            if not self.armed or bucket in self.started:
                return
            self.ready[bucket].add(index)
            if len(self.ready[bucket]) == len(self.buckets[bucket]):
                self._start(bucket, [self.params[i].grad for i in self.buckets[bucket]])

        return ready

    def _start(self, bucket: int, grads: list[Any]) -> None:
        with self.torch.no_grad():
            key = (bucket, int(self.hvd.size()))  # an elastic job's changes: one per size
            exchange = _Bf16Exchange(self.torch, self.hvd, grads, f"hvdtrain.bf16.{bucket}",
                                     self.sums_bf16, self.wires.get(key))
            self.wires[key] = exchange.wire  # made by the first exchange, then kept
            self.started[bucket] = exchange

    def before_backward(self, final: bool) -> None:
        """Whether the next backward pass ends an accumulation: then its hooks start the
        buckets (never on one rank, which an elastic job can shrink to). Anything a failed
        step left behind is dropped first."""
        self.armed = final and self.hvd.size() > 1
        self._forget()

    def _forget(self) -> None:
        """No bucket started, no gradient counted. Exchanges a failed step left unfinished
        may still be reading their send buffers: those get new ones."""
        if self.started:
            self.wires.clear()
        self.started.clear()
        self.ready = [set() for _ in self.buckets]

    def average(self, grads: list[Any]) -> list[Any]:
        self.steps += 1
        self.armed = False
        if self.hvd.size() == 1:  # nothing to send: no rounding either
            return grads
        if not self.buckets:  # no dense parameters (an embedding's rows only)
            return grads
        with self.torch.no_grad():
            for bucket, members in enumerate(self.buckets):  # the same order on every rank
                if bucket not in self.started:
                    self._start(bucket, [grads[i] for i in members])
            exchanges = [self.started[b] for b in range(len(self.buckets))]
            firsts = [exchange.finish_first() for exchange in exchanges]
            for exchange, first, members in zip(exchanges, firsts, self.buckets, strict=True):
                exchange.finish_into(first, [grads[i] for i in members])
        self.started.clear()  # all finished: their send buffers are free again
        self._forget()
        return grads


def bucket_layout(sizes: list[int], bucket_bytes: int) -> list[list[int]]:
    """Indices into ``sizes`` grouped in reverse order (the order a backward pass produces
    gradients, as DDP assumes too) into buckets closed once they reach ``bucket_bytes``."""
    buckets: list[list[int]] = []
    current: list[int] = []
    filled = 0
    for index in reversed(range(len(sizes))):
        current.append(index)
        filled += sizes[index]
        if filled >= bucket_bytes:
            buckets.append(current)
            current, filled = [], 0
    if current:
        buckets.append(current)
    return buckets


def explicit_reducer(torch: Any, hvd: ModuleType, compression: str, params: list[Any],
                     rank: int, warmup_steps: int,
                     seed: int) -> PowerSGDTorch | Bf16Torch | None:
    """The reducer for the compressions hvdtrain averages itself, over ``params`` (the dense
    trained parameters); None for those Horovod's ``DistributedOptimizer`` does (none, fp16)."""
    if compression == "bf16":
        return Bf16Torch(torch, hvd, params)
    if compression == "powersgd":
        return PowerSGDTorch(torch, hvd, [tuple(p.shape) for p in params], rank, warmup_steps,
                            seed)
    return None
