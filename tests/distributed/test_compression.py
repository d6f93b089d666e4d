"""PowerSGD's state survives a checkpoint: a resumed run continues exactly (error feedback,
warm-started Q and the step count restored), with gradient accumulation and warm-up steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvdtrain.catalog import FRAMEWORKS
from tests.helpers.jobs import REPO, hvdtrain, read_summary, run_job

# breast-cancer: small and quick; its 30 → 256 → 256 MLP has matrices PowerSGD compresses at
# rank 2, and vectors (the biases) it sends whole. 2 warm-up steps, then compressed ones, each
# over 2 accumulated micro-batches (15 per rank and epoch: the epoch's end steps on the odd one
# left, so the epoch-end checkpoint holds every sample trained).
ARGS = ("--data", "breast-cancer", "--batch-size", "16", "--compression", "powersgd",
        "--powersgd-rank", "2", "--powersgd-warmup-steps", "2", "--accumulate-steps", "2",
        "--keep-checkpoints", "5")


def _train(run_dir: Path, framework: str, *args: str) -> dict[str, object]:
    done = run_job(hvdtrain("train", "-np", "2", "--framework", framework, "--run-dir",
                            str(run_dir), *ARGS, *args), cwd=REPO, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    return read_summary(run_dir)


@pytest.mark.parametrize("framework", FRAMEWORKS.names())
def test_powersgd_resume_continues_exactly(tmp_path: Path, framework: str) -> None:
    straight = _train(tmp_path / "straight", framework, "--epochs", "2")
    assert straight["parameters_identical"] is True
    resumed = _train(tmp_path / "resumed", framework, "--epochs", "2", "--resume",
                     str(tmp_path / "straight" / "checkpoints" / "epoch-0001.ckpt"))
    assert resumed["epochs_run"] == 2
    assert resumed["parameter_hashes"] == straight["parameter_hashes"]
