"""PyTorch for evaluate, predict and export: a checkpoint's model, its probabilities, and a
rank that computes them the same way whatever the rank count.

``Probabilities`` turns the model's logits into one probability per class (binary: one logit
→ ``[1 - p, p]``; k logits → softmax): the predictor and every export use this one module, so
a served model gives what ``hvdtrain predict`` wrote. A rank computes on one CPU thread:
batches are the same at any rank count, and so, bit for bit, is every result (more ranks, not
more threads, is the parallelism here). Importing this module does not import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hvdtrain import comm
from hvdtrain.config import TrainConfig
from hvdtrain.frameworks.torch.offline import OFFLINE
from hvdtrain.types import Collectives, Dataset, DeviceChoice


def probabilities_module(model: Any, binary: bool) -> Any:
    import torch

    class Probabilities(torch.nn.Module):
        """The model, then its logits as class probabilities."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: Any) -> Any:
            return from_logits(self.model(x), binary)

    return Probabilities()


def from_logits(logits: Any, binary: bool) -> Any:
    import torch

    if binary:
        p = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p, p], 1)
    return torch.softmax(logits, 1)


def load_model(config: TrainConfig, data: Dataset, checkpoint: Path) -> Any:
    """The checkpoint's model, built as training built it, weights loaded, in eval mode."""
    model = OFFLINE.build(config, data)
    OFFLINE.check_checkpoint_fits(model, OFFLINE.read_checkpoint(checkpoint))  # loads them
    return model.eval()


class TorchPredictor:
    name = "torch"

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.device = torch.device("cpu")
        self.model: Any = None
        self.binary = False

    def connect(self) -> Collectives:
        return comm.init("horovod.torch", self.torch.from_numpy)

    def pin(self, choice: DeviceChoice) -> None:
        self.torch.set_num_threads(1)  # the same result at any rank count (module docstring)
        if choice.kind == "cuda" and choice.index is not None:
            self.torch.cuda.set_device(choice.index)
            self.device = self.torch.device("cuda", choice.index)

    def load(self, config: TrainConfig, data: Dataset, checkpoint: Path) -> None:
        self.binary = data.num_classes == 2
        self.model = load_model(config, data, checkpoint).to(self.device)

    def run(self, x: np.ndarray, y: np.ndarray | None
            ) -> tuple[np.ndarray, np.ndarray, float | None]:
        """(probabilities (n, classes) float32, predicted class ids, loss sum or None); the
        loss and the prediction as the training adapter computes them."""
        torch = self.torch
        functional = torch.nn.functional
        with torch.no_grad():
            logits = self.model(torch.from_numpy(x).to(self.device))
            probabilities = from_logits(logits, self.binary)
            loss = None
            if self.binary:
                predicted = (logits[:, 0] > 0).long()
                if y is not None:
                    target = torch.from_numpy(y).to(self.device).float()
                    loss = functional.binary_cross_entropy_with_logits(
                        logits.squeeze(1), target, reduction="sum")
            else:
                predicted = logits.argmax(1)
                if y is not None:
                    loss = functional.cross_entropy(logits, torch.from_numpy(y).to(self.device),
                                                    reduction="sum")
        return (probabilities.cpu().numpy().astype(np.float32), predicted.cpu().numpy(),
                None if loss is None else float(loss))
