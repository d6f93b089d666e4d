"""Test tiers by directory, as pytest markers: ``pytest -m "not distributed"`` is the fast loop.

``unit`` needs no ML framework; ``frameworks`` runs one rank in process per framework;
``distributed`` runs real multi-rank jobs through the real launchers; ``faults`` kills, stops,
resumes and resizes them (restarts, Horovod elastic; slow, so ``make cluster-test``);
``multihost`` runs them
across network-namespace hosts with their own sshd (root only; ``scripts/netns_hosts.sh``);
``slurm`` runs them through a real Slurm cluster on those hosts (root only;
``scripts/slurm_lab.sh``); ``image`` builds the container image with podman and runs jobs in
it (root only; ``make image-test``). The markers are registered in pyproject.toml
(``--strict-markers``).

Helpers shared by the tiers are plain modules in ``tests/helpers/``, imported from there, never
from a ``conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# The namespace-host lab, registered here once for every directory that uses it (multihost,
# slurm): one session fixture, one lab, one lock.
from tests.helpers.namespace_lab import namespace_hosts  # noqa: F401

TIERS = ("distributed", "faults", "frameworks", "image", "multihost", "serving", "slurm")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(str(item.path)).parent.name
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
