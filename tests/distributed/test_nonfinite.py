"""A loss that becomes NaN/inf, through the real launcher, the same for every framework.

``--on-nonfinite stop`` (the default): every rank stops at the same step, the job exits 8
with one clear message, and the newest checkpoint is the last good one. ``skip``: the step is
skipped on every rank (also when only one rank's loss is NaN), the run finishes with identical
weights and counts the skips. NaN in the data never reaches a rank.

Punctual NaNs come from ``tests.fixtures.nonfinite_models`` (real divergence is not punctual);
one test per framework diverges for real, with a learning rate of 1e6.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hvdtrain.catalog import FRAMEWORKS
from tests.helpers.jobs import REPO, hvdtrain, read_summary, run_job

FIXTURES = "tests.fixtures.nonfinite_models"
NAN_AT_STEP_6 = {"torch": f"{FIXTURES}:torch_nan_at_step_6_rank1",
                 "tensorflow": f"{FIXTURES}:keras_nan_at_step_6_rank1"}
NAN_EVERY_3RD = {"torch": f"{FIXTURES}:torch_nan_every_3rd_step_rank0",
                 "tensorflow": f"{FIXTURES}:keras_nan_every_3rd_step_rank0"}
DIVERGED = 8


def _train(run_dir: Path, framework: str, *args: str) -> tuple[int, str]:
    done = run_job(hvdtrain("train", "-np", "2", "--framework", framework, "--run-dir",
                            str(run_dir), "--data", "breast-cancer", *args), cwd=REPO,
                   timeout=180)
    return done.returncode, done.stderr


@pytest.mark.parametrize("framework", FRAMEWORKS.names())
def test_diverging_lr_stops_every_rank_with_exit_8(tmp_path: Path, framework: str) -> None:
    code, err = _train(tmp_path / "run", framework, "--epochs", "3", "--optimizer", "sgd",
                       "--lr", "1e6")
    assert code == DIVERGED, err[-3000:]
    assert "hvdtrain: error: loss became NaN at epoch 1 step" in err, err[-3000:]
    assert "hint: lower --lr" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "summary.json").exists()
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing good to keep yet


@pytest.mark.parametrize("framework", FRAMEWORKS.names())
def test_nan_in_epoch_2_keeps_epoch_1_as_the_newest_checkpoint(tmp_path: Path,
                                                               framework: str) -> None:
    # breast-cancer on 2 ranks: 4 steps an epoch; step 6 (epoch 2 step 2) is NaN on rank 1
    # only, and rank 0 (finite loss) must stop there too
    run_dir = tmp_path / "run"
    code, err = _train(run_dir, framework, "--epochs", "3", "--model",
                       NAN_AT_STEP_6[framework])
    assert code == DIVERGED, err[-3000:]
    assert "loss became NaN at epoch 2 step 2 (of 4)" in err, err[-3000:]
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints == ["best.ckpt", "epoch-0001.ckpt"]
    for rank in (0, 1):  # every rank raised the error itself, at the same step
        log = (run_dir / "logs" / f"rank-{rank}.err").read_text()
        assert "loss became NaN at epoch 2 step 2" in log, log[-2000:]
    metrics = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in metrics] == [1]


@pytest.mark.parametrize("framework", FRAMEWORKS.names())
def test_skip_finishes_with_identical_weights_and_counts_the_skips(tmp_path: Path,
                                                                   framework: str) -> None:
    # every 3rd of 12 steps is NaN on rank 0 only: 4 steps skipped on both ranks
    run_dir = tmp_path / "run"
    code, err = _train(run_dir, framework, "--epochs", "3", "--on-nonfinite", "skip",
                       "--model", NAN_EVERY_3RD[framework])
    assert code == 0, err[-3000:]
    summary = read_summary(run_dir)
    assert summary["nonfinite_skips"] == 4
    assert summary["on_nonfinite"] == "skip"
    assert summary["parameters_identical"] is True
    assert math.isfinite(float(summary["val_loss"]))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["nonfinite_skips"] for r in rows) == 4
    assert all(math.isfinite(r["train_loss"]) for r in rows)  # skipped NaNs stay out


@pytest.mark.parametrize("framework", FRAMEWORKS.names())
def test_nan_in_the_data_is_an_error_before_launch(tmp_path: Path, framework: str) -> None:
    data = tmp_path / "d.csv"
    data.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20))
                    + "1,nan,0\n")
    code, err = _train(tmp_path / "run", framework, "--data", str(data))
    assert code == 6, err
    assert f"hvdtrain: error: {data}:22: column 'b' is NaN" in err
    assert not (tmp_path / "run").exists()
