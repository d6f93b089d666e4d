"""Built-in PyTorch models, sized from the data (binary → 1 output, k classes → k logits).

One builder per ``catalog.MODELS`` name, in ``BUILDERS``; ``frameworks.models.build_model``
checks the fit and handles users' factories.
"""

from __future__ import annotations

from typing import Any

from hvdtrain.frameworks.models import Builder
from hvdtrain.types import TEXT_LENGTH, TEXT_VOCAB, Dataset


def mlp(data: Dataset) -> Any:
    import torch.nn as nn

    return nn.Sequential(
        nn.Linear(data.num_features, 256), nn.ReLU(),
        nn.Linear(256, 256), nn.ReLU(),
        nn.Linear(256, data.num_outputs),
    )


def cnn(data: Dataset) -> Any:
    import torch.nn as nn

    assert data.image_shape is not None  # checked by build_model (catalog: image data only)
    channels, height, width = data.image_shape
    return nn.Sequential(
        nn.Unflatten(1, data.image_shape),
        nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * (height // 2) * (width // 2), 128), nn.ReLU(),
        nn.Linear(128, data.num_outputs),
    )


def transformer(data: Dataset) -> Any:
    import torch
    import torch.nn as nn

    outputs = data.num_outputs

    class ByteTransformer(nn.Module):
        """Small encoder classifier over byte tokens (0 = padding)."""

        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(TEXT_VOCAB, 64, padding_idx=0)
            self.position = nn.Parameter(torch.zeros(1, TEXT_LENGTH, 64))
            layer = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = nn.Linear(64, outputs)

        def forward(self, tokens: Any) -> Any:
            pad = tokens == 0
            hidden = self.encoder(self.embed(tokens) + self.position, src_key_padding_mask=pad)
            keep = (~pad).unsqueeze(-1).float()
            pooled = (hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0)
            return self.head(pooled)

    return ByteTransformer()


BUILDERS: dict[str, Builder] = {"mlp": mlp, "cnn": cnn, "transformer": transformer}
