"""PyTorch behind the ``FrameworkAdapter`` seam, synchronised by ``hvd.DistributedOptimizer``.

Horovod recipe: parameters and optimizer state broadcast from rank 0, gradients averaged by
``DistributedOptimizer`` (with ``backward_passes_per_step`` for accumulation), per-rank RNG
seeded from the run seed. ``--compression fp16`` uses ``SafeFP16Torch`` from ``comm.fp16``,
which cannot silently turn large gradients into inf. ``bf16`` and ``powersgd``
(``comm.torch_compression``) average the gradients explicitly once per optimizer step, after
the last backward pass, with the plain torch optimizer; PowerSGD's Q and step count go into
rank 0's checkpoint, each rank's error buffers ride with its RNG state (gathered from every
rank into the checkpoint, given back to each at a same-size resume). Embeddings chosen by
``--sparse-embeddings`` (``sparse_embeddings``) have sparse gradients: Horovod allgathers their
touched rows in either path, and they are dense again before the step. Optimizers are a table
keyed by the ``catalog.OPTIMIZERS`` names (a conformance test checks both adapters cover
every name).
"""

from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from hvdtrain import comm
from hvdtrain.config import TrainConfig
from hvdtrain.errors import CheckpointError, ConfigError
from hvdtrain.frameworks.torch.offline import OFFLINE
from hvdtrain.frameworks.torch.sparse_embeddings import (
    average_sparse,
    densify,
    fill_missing,
    make_sparse,
    send_coalesced,
    sparse_parameters,
)
from hvdtrain.log import logger
from hvdtrain.types import BatchStats, Dataset, DeviceChoice

# name → (torch.optim class name, extra keyword arguments)
OPTIMIZERS: dict[str, tuple[str, dict[str, Any]]] = {
    "adam": ("Adam", {}),
    "adamw": ("AdamW", {}),
    "sgd": ("SGD", {"momentum": 0.9}),
}


def parameter_groups(named: list[tuple[str, Any]], weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay for weight matrices only: biases and normalisation weights (every tensor
    of one dimension) are left undecayed, the usual fine-tuning recipe."""
    decayed = [p for _, p in named if p.ndim > 1]
    undecayed = [p for _, p in named if p.ndim <= 1]
    groups = [{"params": decayed, "weight_decay": weight_decay},
              {"params": undecayed, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def build_optimizer(torch: Any, name: str, groups: list[dict[str, Any]], lr: float) -> Any:
    """``--optimizer name`` over ``groups`` in torch's ``foreach`` implementation (a few kernels
    over all parameters instead of a Python loop over each): on one core, the encoder's 11.2M
    parameters with weight decay on the matrices, Adam takes 29 ms a step instead of 68, AdamW
    25 instead of 27. Not ``fused``, though it is faster still (8 ms): with it 2 ranks at batch
    B drifted from 1 rank at 2B by 3e-4 in loss after 96 steps, against 2e-7 here
    (``test_two_ranks_equal_one_rank_with_double_batch``)."""
    kind, extra = OPTIMIZERS[name]
    return getattr(torch.optim, kind)(groups, lr=lr, foreach=True, **extra)


def mixed_precision(torch: Any, precision: str, device: Any) -> tuple[Any, Any]:
    """(a context manager for the forward pass, a loss scaler or None) for ``--precision``.
    bf16 needs no scaler (float32's range); fp16 needs one, and a GPU."""
    import contextlib

    if precision == "fp32":
        return contextlib.nullcontext, None
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs a CUDA GPU; on a CPU use --precision bf16")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    return (lambda: torch.autocast(device.type, dtype=dtype)), scaler


class TorchAdapter:
    name = "torch"

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.comm = comm.init("horovod.torch", torch.from_numpy)
        self.device = torch.device("cpu")
        self.fp16_recoveries = 0
        self.safe_fp16: Any = None
        self.reducer: Any = None  # bf16 / powersgd: averaged by hvdtrain, not DistributedOptimizer

    def pin(self, choice: DeviceChoice) -> None:
        # One process per rank: split the cores instead of every rank using all of them.
        local_size = max(1, self.comm.local_size)
        self.torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_size))
        if choice.kind == "cuda" and choice.index is not None:
            self.torch.cuda.set_device(choice.index)
            self.device = self.torch.device("cuda", choice.index)

    def describe_device(self) -> str:
        return str(self.device)

    def setup(self, config: TrainConfig, data: Dataset, broadcast: bool = True) -> None:
        torch, hvd = self.torch, self.comm.hvd
        self.binary = data.num_classes == 2
        self.model = OFFLINE.build(config, data).to(self.device)  # seeded: same init everywhere
        trained = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        base = build_optimizer(torch, config.optimizer,
                               parameter_groups(trained, config.weight_decay),
                               config.scaled_lr(self.comm.size))
        self.clip_grad_norm = config.clip_grad_norm
        self.autocast, self.scaler = mixed_precision(torch, config.precision, self.device)
        from hvdtrain.comm.fp16 import torch_compression
        from hvdtrain.comm.torch_compression import explicit_reducer

        self.safe_fp16 = torch_compression(config.compression, hvd)
        self.accumulation = config.grad_accumulation
        self.trained = [p for _, p in trained]
        self.sparse = self._choose_sparse_embeddings(config, data)
        self.dense = [p for p in self.trained if all(p is not q for q in self.sparse)]
        self.reducer = explicit_reducer(torch, hvd, config.compression, self.dense,
                                        config.powersgd_rank, config.powersgd_warmup_steps,
                                        config.seed)
        self.optimizer = base if self.reducer is not None else hvd.DistributedOptimizer(
            base, named_parameters=trained,
            compression=self.safe_fp16.compressor if self.safe_fp16 else hvd.Compression.none,
            backward_passes_per_step=self.accumulation,
            op=hvd.Sum if self.safe_fp16 else hvd.Average,
        )
        if self.sparse and self.reducer is None:
            send_coalesced(self.optimizer)
        if broadcast:
            self.broadcast_state()
        torch.manual_seed(config.seed * 1000 + self.comm.rank)  # per-rank stream (dropout etc.)
        self._passes = 0

    def _choose_sparse_embeddings(self, config: TrainConfig, data: Dataset) -> list[Any]:
        """``--sparse-embeddings``: which embedding gradients travel as touched rows. A step
        touches at most batch × accumulation × the input's last dimension (the sequence, for
        token ids) rows per rank. With PowerSGD the rows replace the embedding's factors: fewer
        bytes than its dense gradient, and less arithmetic than compressing it (the encoder
        between 2 shaped hosts: averaging and update took 0.13-0.16 s a step against
        0.19-0.29 s)."""
        mode = config.sparse_embeddings
        x = data.x_train
        tokens = int(x.shape[-1]) if x.ndim > 1 and x.dtype.kind in "iu" else 1
        touched = config.batch_size * config.grad_accumulation * tokens
        for name, choice in make_sparse(self.torch, self.model, mode, touched, self.comm.size):
            if self.comm.rank == 0 and choice.sparse:
                logger.info("embedding %s sends its gradient as touched rows (%s)",
                            name, choice.describe())
        return sparse_parameters(self.model)

    def _loss(self, logits: Any, y: Any) -> tuple[Any, Any]:
        torch = self.torch
        if self.binary:
            logits = logits.squeeze(1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, y.float(), reduction="sum")
            predicted = (logits > 0).long()
        else:
            loss = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
            predicted = logits.argmax(1)
        return loss, (predicted == y).sum()

    def broadcast_state(self) -> None:
        hvd = self.comm.hvd
        # Optimizer first: for ranks with fresh state Horovod initialises it with a local
        # zero-gradient step, which may touch parameters; the parameter broadcast then wins.
        hvd.broadcast_optimizer_state(self.optimizer, root_rank=0)
        hvd.broadcast_parameters(self.model.state_dict(), root_rank=0)
        if self._stateful():  # Q and the step count: rank 0's (a resumed checkpoint's)
            self.reducer.load_shared_state(self.comm.broadcast_object(
                self.reducer.shared_state()))

    def _stateful(self) -> bool:
        """A reducer with state to checkpoint (PowerSGD)."""
        return hasattr(self.reducer, "shared_state")

    def snapshot(self) -> Any:
        return copy.deepcopy({"model": self.model.state_dict(),
                              "optimizer": self.optimizer.state_dict(),
                              "compression": (self.reducer.shared_state(),
                                              self.reducer.local_state())
                              if self._stateful() else None})

    def restore_snapshot(self, snapshot: Any) -> None:
        self.model.load_state_dict(snapshot["model"])
        # a copy: the optimizer keeps (and updates in place) the tensors it is given. Horovod's
        # load_state_dict also forgets allreduces a failed step left in flight.
        self.optimizer.load_state_dict(copy.deepcopy(snapshot["optimizer"]))
        if snapshot.get("compression") and self._stateful():
            shared, local = snapshot["compression"]
            self.reducer.load_shared_state(shared)
            self.reducer.load_local_state(local)
        self._passes = 0

    def rng_state(self) -> Any:
        """This rank's own state for the checkpoint: its RNG and, with PowerSGD, its error
        buffers (what compression has deferred on this rank)."""
        rng = self.torch.get_rng_state()
        return {"rng": rng, "powersgd_errors": self.reducer.local_state()} \
            if self._stateful() else rng

    def set_rng_state(self, state: Any) -> None:
        if isinstance(state, dict):
            if self._stateful() and state.get("powersgd_errors") is not None:
                self.reducer.load_local_state(state["powersgd_errors"])
            state = state["rng"]
        self.torch.set_rng_state(state)

    def write_checkpoint(self, path: Path, meta: dict[str, Any]) -> None:
        compression = {"compression_state": self.reducer.shared_state()} \
            if self._stateful() else {}
        self.torch.save({**meta, **compression, "model": self.model.state_dict(),
                         "optimizer": self.optimizer.state_dict()}, path)

    def read_checkpoint(self, path: Path) -> dict[str, Any]:
        return OFFLINE.read_checkpoint(path)

    def apply_checkpoint(self, payload: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            if self._stateful() and payload.get("compression_state"):
                self.reducer.load_shared_state(payload["compression_state"])
        except (RuntimeError, KeyError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
            raise CheckpointError(f"checkpoint does not fit this model ({first[:200]})") from None

    def _tensors(self, x: np.ndarray, y: np.ndarray) -> tuple[Any, Any]:
        return (self.torch.from_numpy(x).to(self.device),
                self.torch.from_numpy(y).to(self.device))

    def train_batch(self, x: np.ndarray, y: np.ndarray, lr: float) -> BatchStats:
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        xs, ys = self._tensors(x, y)
        if self._passes == 0:
            self.optimizer.zero_grad()
        with self.autocast():
            logits = self.model(xs)
        loss_sum, correct = self._loss(logits.float(), ys)
        # A non-finite loss on this rank poisons its gradient: loss × 0 + 1 is exactly 1 for a
        # finite loss and NaN for NaN/inf, so the gradient becomes NaN × gradient. The
        # allreduce carries that to every rank: all see the same non-finite gradient and skip
        # the same step, with no extra collective and no host sync here.
        poison = loss_sum.detach() * 0 + 1
        # max(.., 1): an empty batch (a resumed epoch's last samples on more ranks than
        # samples) adds a zero gradient instead of 0/0
        loss = loss_sum * poison / (max(len(y), 1) * self.accumulation)
        if self.reducer is not None:  # bf16's buckets leave during the step's last backward
            self.reducer.before_backward(final=self._passes + 1 == self.accumulation)
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        self._passes += 1
        nonfinite = self._step() if self._passes == self.accumulation else False
        return BatchStats(float(loss_sum.detach()), int(correct), len(y), nonfinite)

    def finish_accumulation(self) -> bool | None:
        if self._passes == 0:
            return None
        # Each pass was divided by N; k < N of them make the mean when multiplied by N/k.
        # Locally, before any averaging: no allreduce has started (Horovod's delay counters
        # are still above 0), and PowerSGD's error feedback then sees the step's own scale.
        with self.torch.no_grad():
            for p in self.trained:
                if p.grad is not None:
                    p.grad.mul_(self.accumulation / self._passes)
        return self._step()

    def _step(self) -> bool:
        """Average the accumulated gradients and apply them; whether they were non-finite
        (then not applied). ``synchronize`` also allreduces the parameters whose allreduce
        has not started (an accumulation cut short) and resets Horovod's delay counters."""
        self._passes = 0
        if self.reducer is not None:
            self._average_explicitly()
        else:
            fill_missing(self.torch, self.sparse)  # an unused embedding still takes part
            self.optimizer.synchronize()
            # fp16 has Horovod sum (the dense tensors are pre-scaled); rows come back summed
            densify(self.sparse, float(self.comm.size) if self.safe_fp16 else 1.0)
        if self.safe_fp16 is not None:
            self.fp16_recoveries += self.safe_fp16.recover(self.model, self.comm.hvd)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        nonfinite = not self._gradients_finite()
        if not nonfinite:  # never apply a NaN/inf update: the parameters stay good
            if self.clip_grad_norm:  # of the averaged gradient: the same on every rank
                self.torch.nn.utils.clip_grad_norm_(
                    [p for group in self.optimizer.param_groups for p in group["params"]],
                    self.clip_grad_norm)
            if self.reducer is not None:
                self.optimizer.step()
            else:
                with self.optimizer.skip_synchronize():
                    self.optimizer.step()
        if self.scaler is not None:
            self.scaler.update(self.scaler.get_scale() / 2 if nonfinite else None)
        return nonfinite

    def _average_explicitly(self) -> None:
        """bf16 / PowerSGD: this rank's (accumulated) gradients replaced by their average."""
        torch = self.torch
        for p in self.dense:
            if p.grad is None:  # unused in this forward pass: a zero gradient, as Horovod's
                p.grad = torch.zeros_like(p)
        fill_missing(torch, self.sparse)
        rows = average_sparse(self.comm.hvd, self.sparse, "hvdtrain.sparse_rows")
        averaged = self.reducer.average([p.grad for p in self.dense])
        with torch.no_grad():
            for p, g in zip(self.dense, averaged, strict=True):
                if g is not p.grad:  # bf16 averages in place
                    p.grad.copy_(g)
        for p, handle in zip(self.sparse, rows, strict=True):
            p.grad = handle()
        densify(self.sparse)

    def _gradients_finite(self) -> bool:
        """The averaged gradients (identical on every rank) hold no NaN/inf: the sum of all
        their elements is finite (NaN and inf propagate through a sum). One host sync; the
        cheapest whole check measured on the 2-rank default (isfinite per tensor, or a norm,
        cost several times more on CPU). A sum beyond float32's range counts as non-finite,
        which such a gradient is in effect."""
        torch = self.torch
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        return not grads or bool(torch.isfinite(torch.stack([g.sum() for g in grads]).sum()))

    def parameters_finite(self) -> bool:
        torch = self.torch
        values = [t for t in self.model.state_dict().values() if t.is_floating_point()]
        return not values or bool(torch.stack([torch.isfinite(t).all() for t in values]).all())

    def evaluate_batch(self, x: np.ndarray, y: np.ndarray) -> BatchStats:
        self.model.eval()
        with self.torch.no_grad():
            xs, ys = self._tensors(x, y)
            with self.autocast():
                logits = self.model(xs)
            loss_sum, correct = self._loss(logits.float(), ys)
        return BatchStats(float(loss_sum), int(correct), len(y))

    def parameter_hash(self) -> str:
        digest = hashlib.sha256()
        for name, tensor in self.model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()
