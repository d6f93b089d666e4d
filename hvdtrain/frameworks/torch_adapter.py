"""PyTorch behind the ``FrameworkAdapter`` seam, synchronised by ``hvd.DistributedOptimizer``.

Horovod recipe: parameters and optimizer state broadcast from rank 0, gradients averaged by
``DistributedOptimizer`` (with ``backward_passes_per_step`` for accumulation), per-rank RNG
seeded from the run seed. ``--compression fp16`` uses ``SafeFP16`` from ``comm.fp16``, which
cannot silently turn large gradients into inf.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from hvdtrain import comm
from hvdtrain.cluster.pinning import DeviceChoice
from hvdtrain.frameworks.base import BatchStats
from hvdtrain.training.config import TrainConfig
from hvdtrain.training.data import Dataset


def build_model(name: str, data: Dataset) -> Any:
    import torch.nn as nn

    outputs = 1 if data.num_classes == 2 else data.num_classes
    if name == "mlp":
        return nn.Sequential(
            nn.Linear(data.num_features, 256), nn.ReLU(),
            nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, outputs),
        )
    if name == "cnn":
        if data.image_shape is None:
            from hvdtrain.errors import ConfigError

            raise ConfigError(f"--model cnn needs image data (e.g. digits), not {data.name!r}")
        channels, height, width = data.image_shape
        return nn.Sequential(
            nn.Unflatten(1, data.image_shape),
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * (height // 2) * (width // 2), 128), nn.ReLU(),
            nn.Linear(128, outputs),
        )
    from hvdtrain.errors import ConfigError

    raise ConfigError(f"unknown model {name!r}")


class TorchAdapter:
    name = "torch"

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.comm = comm.init("torch")
        self.device = torch.device("cpu")
        self.fp16_recoveries = 0

    def pin(self, choice: DeviceChoice) -> None:
        if choice.kind == "cuda" and choice.index is not None:
            self.torch.cuda.set_device(choice.index)
            self.device = self.torch.device("cuda", choice.index)

    def describe_device(self) -> str:
        return str(self.device)

    def setup(self, config: TrainConfig, data: Dataset) -> None:
        torch, hvd = self.torch, self.comm.hvd
        torch.manual_seed(config.seed)  # same init everywhere; broadcast makes it certain
        self.binary = data.num_classes == 2
        self.model = build_model(config.model, data).to(self.device)
        params = self.model.parameters()
        lr = config.scaled_lr(self.comm.size)
        if config.optimizer == "adam":
            base = torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)
        elif config.optimizer == "adamw":
            base = torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)
        else:
            base = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=config.weight_decay)
        from hvdtrain.comm.fp16 import torch_compression

        self.safe_fp16 = torch_compression(config.compression, hvd)
        self.accumulation = config.grad_accumulation
        self.optimizer = hvd.DistributedOptimizer(
            base, named_parameters=self.model.named_parameters(),
            compression=self.safe_fp16.compressor if self.safe_fp16 else hvd.Compression.none,
            backward_passes_per_step=self.accumulation,
            op=hvd.Sum if self.safe_fp16 else hvd.Average,
        )
        hvd.broadcast_parameters(self.model.state_dict(), root_rank=0)
        hvd.broadcast_optimizer_state(self.optimizer, root_rank=0)
        torch.manual_seed(config.seed * 1000 + self.comm.rank)  # per-rank stream (dropout etc.)
        self._passes = 0

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
        loss_sum, correct = self._loss(self.model(xs), ys)
        (loss_sum / (len(y) * self.accumulation)).backward()
        self._passes += 1
        if self._passes == self.accumulation:
            self._passes = 0
            if self.safe_fp16 is not None:
                self.optimizer.synchronize()
                self.fp16_recoveries += self.safe_fp16.recover(self.model, self.comm.hvd)
                with self.optimizer.skip_synchronize():
                    self.optimizer.step()
            else:
                self.optimizer.step()
        return BatchStats(float(loss_sum.detach()), int(correct), len(y))

    def evaluate_batch(self, x: np.ndarray, y: np.ndarray) -> BatchStats:
        self.model.eval()
        with self.torch.no_grad():
            xs, ys = self._tensors(x, y)
            loss_sum, correct = self._loss(self.model(xs), ys)
        return BatchStats(float(loss_sum), int(correct), len(y))

    def parameter_hash(self) -> str:
        digest = hashlib.sha256()
        for name, tensor in self.model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()
