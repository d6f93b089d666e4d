"""Framework name → adapter, imported only on use so a rank loads exactly one framework.

The names and their ``module:attr`` targets are declared in ``catalog.FRAMEWORKS``; the name
was validated by ``TrainConfig`` before a rank gets here.
"""

from __future__ import annotations

from hvdtrain.catalog import FRAMEWORKS
from hvdtrain.types import FrameworkAdapter


def create_adapter(name: str) -> FrameworkAdapter:
    adapter: FrameworkAdapter = FRAMEWORKS.load(name)()
    return adapter
