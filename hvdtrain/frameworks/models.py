"""Building a model by name, the same way for every framework.

``build_model`` first checks that the model fits the data (declared once in
``catalog.MODELS``: which data kinds each model reads), then calls either the framework's own
builder for a built-in name or the user's factory for ``module.path:factory``. Both adapters
go through here, so a mismatch is the same clear error whatever ``--framework`` says.

A user's factory is called with the keyword arguments it accepts among ``num_features``,
``num_outputs``, ``input_shape`` and ``num_classes`` (so ``def make(): ...`` works too). The
loss comes from the data's task: one output → binary cross-entropy, k → cross-entropy.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hvdtrain.catalog import MODELS
from hvdtrain.errors import ConfigError
from hvdtrain.types import Dataset, is_user_model

Builder = Callable[[Dataset], Any]


def check_model_fits(name: str, data: Dataset) -> None:
    if is_user_model(name):
        return  # a user's model: its factory decides
    model = MODELS.get(name)
    if data.kind not in model.data_kinds:
        raise ConfigError(f"--model {name} needs {model.needs}; {data.name!r} is "
                          f"{data.kind} data")


def build_model(name: str, data: Dataset, builders: Mapping[str, Builder], expected: type,
                what: str) -> Any:
    """The model ``name`` for ``data``: a built-in from ``builders`` or a user's factory whose
    result must be an ``expected`` (named ``what`` in the error)."""
    check_model_fits(name, data)
    if is_user_model(name):
        return build_user_model(name, data, expected, what)
    return builders[name](data)


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
