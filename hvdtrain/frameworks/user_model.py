"""A user's own model given as ``module.path:factory``.

The factory is called with the keyword arguments it accepts among ``num_features``,
``num_outputs``, ``input_shape`` and ``num_classes`` (so ``def make(): ...`` works too).
The loss comes from the data's task: one output → binary cross-entropy, k → cross-entropy.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

from hvdtrain.errors import ConfigError
from hvdtrain.training.data import Dataset


def build_user_model(spec: str, data: Dataset, expected: type, what: str) -> Any:
    """Import and call the factory; its result must be an ``expected`` (named ``what``)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"--model {spec!r}: expected 'module.path:factory'")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # like `python -m`, find modules in the cwd
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--model {spec!r}: cannot import {module_name!r} ({exc})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"--model {spec!r}: {module_name} has no callable {attr!r}")
    offered = {"num_features": data.num_features, "num_outputs": data.num_outputs,
               "input_shape": tuple(data.x_train.shape[1:]), "num_classes": data.num_classes}
    accepted = inspect.signature(factory).parameters
    model = factory(**{k: v for k, v in offered.items() if k in accepted})
    if not isinstance(model, expected):
        raise ConfigError(f"--model {spec}: the factory returned {type(model).__name__}, "
                          f"not a {what}")
    return model
