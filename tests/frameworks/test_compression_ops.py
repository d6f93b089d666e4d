"""bf16's transport (int16 bit patterns through alltoall + allgather, an fp32 sum; torch at two
ranks one allgather of both; torch's buckets started by the final backward pass) and
PowerSGD's torch/TF ops, two simulated ranks in one process per framework
(``compression_check.py``): the reference bf16 average exactly, identical on both ranks, no
overflow at 1e30 (fp16's range ends at 65504); PowerSGD equal to the NumPy reference."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hvdtrain.catalog import FRAMEWORKS

REPO = Path(__file__).resolve().parents[2]
MODULES = {"torch": "torch", "tensorflow": "tensorflow"}


@pytest.mark.parametrize("framework", FRAMEWORKS.names())
def test_bf16_transport_and_powersgd_ops(framework: str) -> None:
    if importlib.util.find_spec(MODULES[framework]) is None:
        pytest.skip(f"{framework} is not installed")
    done = subprocess.run([sys.executable, str(REPO / "tests/frameworks/compression_check.py"),
                           framework], capture_output=True, text=True, timeout=180, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    bf16 = result["bf16"]
    assert bf16["shapes_kept"] and bf16["identical_on_ranks"] and bf16["finite"], bf16
    assert bf16["max_diff_from_bf16_reference"] == 0.0, bf16
    # lossy, within bf16's precision: the inputs' rounding and the result's, 2^-8 each
    assert 0 < bf16["max_relative_error"] <= 2 ** -7, bf16
    if framework == "torch":  # its buckets: reversed order, 200 bytes each, the same result
        buckets = result["buckets"]
        assert buckets["buckets"] == [[3], [2, 1], [0]], buckets
        assert buckets["started_early"] == 0, buckets  # not armed: an earlier micro-batch
        # during the final backward: the buckets whose gradients all arrived; the one holding
        # the unused parameter 3 only in average(), after them
        assert buckets["started_in_backward"] == ["hvdtrain.bf16.1.both",
                                                  "hvdtrain.bf16.2.both"], buckets
        assert buckets["started_in_all"][-1] == "hvdtrain.bf16.0.both", buckets
        assert buckets["equal_to_whole"], buckets
    assert result["powersgd"]["compressed"] == [0, 1]
    assert result["powersgd"]["max_diff_from_numpy"] < 1e-4, result["powersgd"]
