"""bf16 and PowerSGD gradient averaging for the torch adapter, reduced after backward.

Why not a Horovod ``Compressor`` in ``DistributedOptimizer``: Horovod 0.28.1 has no bfloat16
at all (its allreduce refuses ``torch.bfloat16``; no reduction kernel, MPI or Gloo, sums it),
and PowerSGD's two rounds (P, then Q from the averaged P) do not fit a per-tensor
compress/decompress. Both therefore average the whole gradient list explicitly, once per
optimizer step, after the last backward pass of an accumulation (the adapter then uses the
plain torch optimizer, no per-tensor hooks).

**bf16 without a bf16 sum**: the gradients, packed into one flat buffer, travel as bfloat16 bit
patterns (int16, which Horovod moves) in a reduce-scatter made of an ``alltoall`` (rank i gets
every rank's i-th chunk) and a sum in float32 in rank order, then an ``allgather`` of the
averaged chunks, again in bfloat16. Those are a bf16 ring allreduce's bytes (2(n−1)/n · 2 bytes
per element each way), with the sum exact in float32 and the result identical on every rank.
bfloat16 has float32's range: no pre-scaling, no overflow retry (unlike fp16). At exactly two
ranks the same bytes go in one collective instead (an ``allgather`` of both bf16 gradients).
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from hvdtrain.comm.powersgd import Ops, Plan, decode, drive, encode, initial_qs, powersgd_round
from hvdtrain.log import logger


def bf16_average(torch: Any, hvd: ModuleType, grads: list[Any], name: str) -> list[Any]:
    """The average of ``grads`` across ranks, sent as bfloat16 (see the module notes)."""
    with torch.no_grad():
        size = int(hvd.size())
        flat = torch.cat([g.reshape(-1).float() for g in grads])
        total = flat.numel()
        if size == 2:
            averaged = _bf16_average_of_two(torch, hvd, flat, name)
        else:
            chunk = max(1, math.ceil(total / size))
            padded = torch.nn.functional.pad(flat, (0, chunk * size - total))
            wire = padded.reshape(size, chunk).to(torch.bfloat16).view(torch.int16)
            got = hvd.alltoall(wire, name=f"{name}.scatter")  # row i: rank i's chunk for me
            mine = got.view(torch.bfloat16).float().sum(0) / size
            gathered = hvd.allgather(mine.to(torch.bfloat16).view(torch.int16).unsqueeze(0),
                                     name=f"{name}.gather")
            averaged = gathered.view(torch.bfloat16).float().reshape(-1)[:total]
        out, start = [], 0
        for g in grads:
            out.append(averaged[start:start + g.numel()].view_as(g).to(g.dtype))
            start += g.numel()
        return out


def _bf16_average_of_two(torch: Any, hvd: ModuleType, flat: Any, name: str) -> Any:
    """Two ranks: one ``allgather`` of both whole bf16 gradients, summed in float32 in rank
    order. The same bytes as reduce-scatter + allgather at two ranks (each rank sends its
    gradient once) in one collective instead of two; at three ranks and more it would send
    more, so the general path stays there. The sum is not rounded to bf16 again."""
    wire = flat.to(torch.bfloat16).view(torch.int16).unsqueeze(0)
    both = hvd.allgather(wire, name=f"{name}.both").view(torch.bfloat16).float()
    return (both[0] + both[1]) / 2


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
    """Stateless: the same interface as ``PowerSGDTorch`` for the adapter."""

    def __init__(self, torch: Any, hvd: ModuleType) -> None:
        self.torch, self.hvd = torch, hvd
        self.steps = 0

    def average(self, grads: list[Any]) -> list[Any]:
        self.steps += 1
        if self.hvd.size() == 1:  # nothing to send: no rounding either
            return grads
        return bf16_average(self.torch, self.hvd, grads, "hvdtrain.bf16")


def explicit_reducer(torch: Any, hvd: ModuleType, compression: str,
                     shapes: list[tuple[int, ...]], rank: int, warmup_steps: int,
                     seed: int) -> PowerSGDTorch | Bf16Torch | None:
    """The reducer for compressions averaged after backward; None for those Horovod's
    ``DistributedOptimizer`` does (none, fp16)."""
    if compression == "bf16":
        return Bf16Torch(torch, hvd)
    if compression == "powersgd":
        return PowerSGDTorch(torch, hvd, shapes, rank, warmup_steps, seed)
    return None
