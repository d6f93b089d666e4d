"""Framework name → adapter, imported only on use so a rank loads exactly one framework."""

from __future__ import annotations

import importlib

from hvdtrain.errors import ConfigError
from hvdtrain.frameworks.base import FrameworkAdapter

ADAPTERS = {
    "torch": "hvdtrain.frameworks.torch_adapter:TorchAdapter",
    "tensorflow": "hvdtrain.frameworks.tf_adapter:TensorFlowAdapter",
}


def create_adapter(name: str) -> FrameworkAdapter:
    target = ADAPTERS.get(name)
    if target is None:
        raise ConfigError(
            f"framework {name!r} has no adapter yet (available: {', '.join(ADAPTERS)})")
    module, attr = target.split(":")
    adapter: FrameworkAdapter = getattr(importlib.import_module(module), attr)()
    return adapter
