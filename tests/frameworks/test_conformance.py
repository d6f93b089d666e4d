"""One conformance suite for every registered adapter (each in its own process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hvdtrain.catalog import FRAMEWORKS

pytest.importorskip("horovod")
CHECK = Path(__file__).with_name("conformance_check.py")
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("framework", FRAMEWORKS.names())
def test_adapter_conforms(framework: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(CHECK), framework, str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results == {
        "missing": [], "catalog_covered": True, "eval_count": 64, "hash_stable": True,
        "loss_decreased": True,
        "training_changes_parameters": True, "moved_after_checkpoint": True,
        "checkpoint_round_trip": True, "checkpoint_epoch": 1, "corrupt_rejected": True,
        "foreign_rejected": True,
    }
