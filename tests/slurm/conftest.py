"""A real Slurm cluster on the namespace hosts: the cluster and its session fixture
``slurm_cluster`` live in tests/helpers/slurm_lab.py and are registered here, for this
directory only."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.slurm_lab import slurm_cluster  # noqa: F401  (the fixture)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slurm tests last: the cluster's slurmds run inside the namespace hosts until the session
    ends, and the multi-host tests check that nothing but sshd runs there."""
    items.sort(key=lambda item: Path(str(item.path)).parent == Path(__file__).parent)
