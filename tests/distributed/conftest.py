"""Real multi-rank runs: subprocesses in their own process group, with a hard timeout
(tests/helpers/jobs.py). Every test here needs Horovod's PyTorch binding."""

from __future__ import annotations

import pytest

pytest.importorskip("horovod.torch")
