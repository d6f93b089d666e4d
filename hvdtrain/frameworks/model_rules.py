"""Which built-in model fits which data, decided once for every framework.

Both ``torch_models`` and ``tf_models`` call ``check_model_fits`` before building, so a
mismatch is the same clear error whatever ``--framework`` says.
"""

from __future__ import annotations

from hvdtrain.errors import ConfigError
from hvdtrain.training.data import Dataset


def check_model_fits(name: str, data: Dataset) -> None:
    if ":" in name:
        return  # a user's model: its factory decides
    if name == "transformer" and data.kind != "text":
        raise ConfigError(f"--model transformer needs text data (synthetic-text or a .jsonl "
                          f"file), not {data.name!r}")
    if name != "transformer" and data.kind == "text":
        raise ConfigError(f"--model {name} cannot read text; use --model transformer")
    if name == "cnn" and data.image_shape is None:
        raise ConfigError(f"--model cnn needs image data (e.g. digits), not {data.name!r}")

