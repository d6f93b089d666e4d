"""Multi-host tests: the lab itself lives in tests/namespace_lab.py (shared with tests/slurm);
its ``namespace_hosts`` fixture is registered once, in tests/conftest.py. The names below are
re-exported for the tests that import them from here."""

from __future__ import annotations

import pytest

from tests.namespace_lab import (  # noqa: F401  (re-exported)
    BRIDGE,
    BRIDGE_ADDRESS,
    PRIVATE_DIR,
    REPO,
    STATE_DIR,
    SUBNET,
    NamespaceHosts,
    lab_leftovers,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "multihost: needs root; real ssh hosts in network namespaces on this machine"
    )
