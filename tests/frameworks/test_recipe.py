"""The fine-tuning recipe in the torch adapter (its own process): accumulation (and an epoch's
remainder stepped on at its end), clipping of the averaged gradient, weight decay only on
matrices."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.frameworks.recipe_check import assert_remainder_stepped

pytest.importorskip("horovod")
CHECK = Path(__file__).with_name("recipe_check.py")
REPO = Path(__file__).resolve().parents[2]


def test_torch_recipe() -> None:
    done = subprocess.run([sys.executable, str(CHECK), "torch"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["accumulation_waits"] is True  # no step after the first of two passes
    assert results["accumulation_equals_big_batch"] < 1e-6
    assert_remainder_stepped(results)  # an epoch's remainder (TensorFlow's: test_keras_hub.py)
    # SGD's first step is lr x the gradient: with the gradient clipped to 0.01, exactly that
    assert results["clipped_step_norm"] == pytest.approx(0.01, rel=1e-4)
    assert results["decay_by_rank"] == [[1, 0.0], [2, 0.5]]
