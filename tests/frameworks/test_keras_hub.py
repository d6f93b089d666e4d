"""KerasHub presets (``keras-hub:DIR``) and the fine-tuning recipe in the TensorFlow adapter,
run in their own process (``keras_hub_check.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.frameworks.recipe_check import assert_remainder_stepped

pytest.importorskip("horovod")
pytest.importorskip("keras_hub")
CHECK = "tests.frameworks.keras_hub_check"  # a module: it imports the test fixtures
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-m", CHECK, str(tmp_path_factory.mktemp("kh"))],
                          cwd=REPO, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    got: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return got


def test_presets_load_tokenize_and_freeze(results: dict[str, object]) -> None:
    # 8 texts packed as ids, mask, segments; cut to the longest row (dynamic padding)
    packed = results["packed"]
    assert isinstance(packed, list) and packed[0][:2] == [8, 3] and packed[1] == "int32"
    assert results["trimmed"] is True
    # a pair's second segment is marked, and the pair is truncated to --max-length
    assert results["pair_segments"] == [0, 1] and results["pair_length"] == 12
    # the saved two-class head is kept; a backbone preset gets a fresh one; 2 classes: 1 logit
    assert results["head_kept"] == [True, False]
    assert results["outputs"] == [[8, 1], [8, 1], [8, 3]]
    assert results["label_names"] == ["no", "yes"]
    frozen, untrained, fewer = results["frozen"]  # type: ignore[misc]
    assert frozen > 0 and frozen == untrained and fewer > 0
    assert results["size"][:2] == [32, 2]  # type: ignore[index]


def test_what_cannot_load_is_one_line(results: dict[str, object]) -> None:
    assert results["too_many_layers"] == "--freeze-layers 3: the model has 2 blocks"
    assert str(results["too_long"]).startswith("--max-length 512: the model at ")
    assert str(results["too_long"]).endswith("takes at most 128 tokens")
    message = str(results["cannot_load"])
    assert "cannot load a text classifier from" in message and "\n" not in message


def test_tensorflow_recipe(results: dict[str, object]) -> None:
    """The torch recipe test's assertions (``test_recipe.py``), for TensorFlow."""
    assert results["accumulation_waits"] is True
    assert results["accumulation_equals_big_batch"] < 1e-6  # type: ignore[operator]
    assert_remainder_stepped(results)
    # SGD's first step is lr x the gradient: with the gradient clipped to 0.01, exactly that
    assert results["clipped_step_norm"] == pytest.approx(0.01, rel=1e-4)
    assert results["decay_by_rank"] == [[1, False], [2, True]]
    assert results["l2_by_rank"] == [[1, False], [2, True]]
    assert results["mlp_bf16"] == ["mixed_bfloat16", "float32", True, True]


def test_fine_tuning_in_the_adapter(results: dict[str, object]) -> None:
    shape, dtype, names = results["tokens"]  # type: ignore[misc]
    assert shape[0] == 3 and dtype == "int32" and names == ["negative", "positive"]
    assert results["frozen_unchanged"] is True and results["trained_changed"] is True
    assert results["loss_decreased"] is True
    assert results["bf16"] == ["mixed_bfloat16", "float32", True, True]
    assert str(results["fp16_on_cpu"]).startswith("--precision fp16 needs a CUDA GPU")
    assert results["torch_imported"] is False
