"""``--sparse-embeddings``: a language model's embedding gradients sent as the rows each step
touched train the same model as the whole matrices, through the real launcher at 2 ranks.

Every path that averages gradients is covered, each with an accumulation of 2 micro-batches
(sparse gradients accumulate by appending rows): Horovod's ``DistributedOptimizer`` (fp32, and
fp16, where Horovod sums and the rows are divided afterwards) and the explicit path (bf16).
The fixture's BERT has a 145-token vocabulary, so ``auto`` would keep it dense: ``on`` forces
the rows; the byte rule itself is unit-tested (``tests/unit/test_sparse_rows.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.language_models import make_bert, write_reviews
from tests.helpers.jobs import hvdtrain, read_summary, run_job

pytestmark = pytest.mark.distributed
pytest.importorskip("transformers")

# SGD, not Adam: Adam's update does not change with the gradient's scale, SGD's does, so a
# row average off by the world size shows in the embedding's update
ARGS = ("--model", "hf:bert", "--data", "reviews.csv", "--text-column", "review",
        "--label-column", "sentiment", "--epochs", "1", "--lr", "0.05", "--optimizer", "sgd",
        "--accumulate-steps", "2", "--record-step-losses")
EMBEDDINGS = ("word_embeddings", "position_embeddings", "token_type_embeddings")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sparse")
    make_bert(root / "bert")
    write_reviews(root / "reviews.csv", n=200)
    return root


def _embedding_updates(work: Path, run: str) -> dict[str, Any]:
    """How far training moved each embedding matrix from the pretrained weights."""
    import torch
    from safetensors.torch import load_file

    start = load_file(str(work / "bert" / "model.safetensors"))
    end = torch.load(work / run / "checkpoints" / "epoch-0001.ckpt", weights_only=False)
    return {name: end["model"][f"model.bert.embeddings.{name}.weight"]
            - start[f"bert.embeddings.{name}.weight"] for name in EMBEDDINGS}


def _train(work: Path, name: str, *args: str) -> tuple[dict[str, Any], str]:
    done = run_job(hvdtrain("train", "-np", "2", *ARGS, "--run-dir", name, *args), cwd=work,
                   timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = read_summary(work / name)
    assert summary["parameters_identical"] is True
    return summary, done.stdout + done.stderr


@pytest.fixture(scope="module")
def dense(work: Path) -> dict[str, Any]:
    summary, output = _train(work, "dense", "--sparse-embeddings", "off")
    assert "touched rows" not in output
    return summary


@pytest.mark.parametrize(("compression", "tolerance"),
                         [("none", 1e-5), ("fp16", 2e-3), ("bf16", 5e-3)])
def test_rows_train_the_same_model_as_whole_matrices(work: Path, dense: dict[str, Any],
                                                     compression: str, tolerance: float) -> None:
    summary, output = _train(work, f"rows-{compression}", "--sparse-embeddings", "on",
                             "--compression", compression)
    # the plan of what travels as rows is said once, by rank 0
    assert output.count("embeddings.word_embeddings sends its gradient as touched rows") == 1
    losses, reference = summary["step_losses"], dense["step_losses"]
    assert len(losses) == len(reference) >= 4
    for step, (got, want) in enumerate(zip(losses, reference, strict=True)):
        assert abs(got - want) <= tolerance * want, (step, losses, reference)
    assert abs(summary["val_loss"] - dense["val_loss"]) <= tolerance * dense["val_loss"]
    # the embeddings themselves moved as the dense run moved them (compression aside)
    got, want = _embedding_updates(work, f"rows-{compression}"), _embedding_updates(work, "dense")
    for name in EMBEDDINGS:
        assert float(want[name].norm()) > 0, name
        error = float((got[name] - want[name]).norm() / want[name].norm())
        assert error <= tolerance, (name, error)  # measured: 3e-7, 2e-6 and 2e-5
