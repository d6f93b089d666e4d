"""Fine-tuning a KerasHub preset (``--model keras-hub:DIR --framework tensorflow``) through the
real launchers, then evaluate, predict and export, as a user with a preset directory and a CSV
would: the TensorFlow twin of ``test_language_models.py``.

The model is a tiny KerasHub BERT saved with ``save_to_preset`` with a WordPiece vocabulary of
the fixture's words (``tests.fixtures.language_models.make_keras_bert``): nothing is downloaded.
The labelled reviews carry one sentiment word each, which a fine-tuned model learns. Every
process imports TensorFlow (~15 s here), so the runs are few, shared between tests, and run two
at a time where they do not depend on each other.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.language_models import make_keras_bert, write_reviews
from tests.helpers.jobs import finish, hvdtrain, job_env, read_summary, spawn

pytestmark = pytest.mark.distributed
pytest.importorskip("keras_hub")

# the fixture's data supports this comfortably: held-out accuracy reaches 1.0 in 2-3 epochs
# at lr 1e-3 to 3e-3 (seeds 7 and 42, batch 8 and 16)
ACCURACY_BAR = 0.9
FAST = ("--framework", "tensorflow", "--lr", "2e-3", "--epochs", "6", "--text-column",
        "review", "--label-column", "sentiment")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lm-keras")
    make_keras_bert(root / "kbert")
    write_reviews(root / "reviews.csv", n=600)
    write_reviews(root / "holdout.csv", n=120, seed=9)
    return root


def start(work: Path, *args: str) -> subprocess.Popen[str]:
    return spawn(hvdtrain(*args), job_env(), work)


def stop(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        if proc.poll() is None:  # a test failed before it waited for this job
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


@pytest.fixture(scope="module")
def one_rank(work: Path) -> Iterator[subprocess.Popen[str]]:
    """Fine-tuning at 1 rank with horovodrun, started beside the 2-rank run."""
    proc = start(work, "train", "-np", "1", "--launcher", "horovodrun", "--model",
                 "keras-hub:kbert", "--data", "reviews.csv", *FAST, "--run-dir", "run-hr1")
    yield proc
    stop(proc)


@pytest.fixture(scope="module")
def trained(work: Path, one_rank: subprocess.Popen[str]) -> dict[str, Any]:
    """Fine-tuned at 2 ranks with mpirun; relative paths, as a user types them."""
    run_dir = work / "run"
    done = finish(start(work, "train", "-np", "2", "--launcher", "mpirun", "--model",
                        "keras-hub:kbert", "--data", "reviews.csv", *FAST, "--run-dir", "run"),
                  300)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"run_dir": run_dir, "summary": read_summary(run_dir), "output": done.stdout,
            "stderr": done.stderr}


@pytest.fixture(scope="module")
def after(trained: dict[str, Any], work: Path) -> Iterator[dict[str, Any]]:
    """``evaluate`` at 2 ranks beside ``predict`` of the held-out reviews at 1 rank (the same
    at any rank count)."""
    out = work / "predictions.csv"
    evaluating = start(work, "evaluate", "--checkpoint", "run", "--data", "reviews.csv",
                       "--json", "-np", "2")
    predicting = start(work, "predict", "--checkpoint", "run", "--data", "holdout.csv",
                       "--output", str(out), "-np", "1")
    try:
        evaluated, predicted = finish(evaluating, 300), finish(predicting, 300)
        assert predicted.returncode == 0, predicted.stderr[-3000:]
        with out.open(newline="") as handle:
            yield {"evaluate": evaluated, "predictions": list(csv.DictReader(handle))}
    finally:
        stop(evaluating, predicting)


def test_fine_tuning_learns_with_identical_parameters(trained: dict[str, Any]) -> None:
    summary = trained["summary"]
    assert summary["val_accuracy"] >= ACCURACY_BAR, summary
    assert summary["parameters_identical"] is True
    assert summary["world_size"] == 2 and summary["framework"] == "tensorflow"
    # the memory estimate is printed before launch, and the fine-tuning defaults applied
    assert "parameters" in trained["stderr"] and "a rank needs about" in trained["stderr"]
    config = summary["config"]
    assert config["optimizer"] == "adamw" and config["lr_schedule"] == "linear"
    assert config["warmup_ratio"] == 0.1 and config["lr_scaling"] == "none"


def test_horovodrun_and_one_rank(work: Path, one_rank: subprocess.Popen[str]) -> None:
    done = finish(one_rank, 300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_summary(work / "run-hr1")["val_accuracy"] >= ACCURACY_BAR


def test_evaluate_predict_and_label_names(trained: dict[str, Any], work: Path,
                                          after: dict[str, Any]) -> None:
    done = after["evaluate"]
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["split"] == "val"
    assert abs(result["loss"] - trained["summary"]["val_loss"]) <= 1e-4 * max(
        trained["summary"]["val_loss"], 1e-3), result
    assert result["class_names"] == ["negative", "positive"]

    with (work / "holdout.csv").open(newline="") as handle:
        truth = [row["sentiment"] for row in csv.DictReader(handle)]
    predictions = after["predictions"]
    assert len(predictions) == len(truth)
    correct = sum(row["prediction"] == label for row, label in zip(predictions, truth))
    assert correct / len(truth) >= ACCURACY_BAR


def test_exports_take_raw_text_without_hvdtrain(work: Path, after: dict[str, Any]) -> None:
    """``--format keras`` and ``savedmodel`` include the preset's preprocessor: in a fresh
    Python that cannot import hvdtrain, both take the raw held-out texts and give predict's
    probabilities."""
    exports = (("keras", "exported.keras"), ("savedmodel", "exported-savedmodel"))
    procs = [start(work, "export", "--checkpoint", "run", "--format", fmt, "--output", name)
             for fmt, name in exports]
    try:
        for proc in procs:
            done = finish(proc, 300)
            assert done.returncode == 0, done.stderr[-3000:]
    finally:
        stop(*procs)
    for _, name in exports:
        side = json.loads((work / f"{name}.json").read_text())
        assert side["input"]["dtype"] == "string" and side["input"]["preprocessor"] == "included"
        assert side["class_names"] == ["negative", "positive"]
    script = textwrap.dedent("""
        import csv, json, os, sys
        sys.modules["hvdtrain"] = None  # prove the exports need no hvdtrain
        os.environ["KERAS_BACKEND"] = "tensorflow"
        import keras, tensorflow as tf
        import tensorflow_text  # noqa: F401  (the SavedModel's tokenizer ops)
        texts = [r["review"] for r in csv.DictReader(open("holdout.csv", newline=""))]
        model = keras.saving.load_model("exported.keras")
        loaded = tf.saved_model.load("exported-savedmodel")  # kept: its variables die with it
        served = loaded.serve(tf.constant(texts))
        print(json.dumps({"keras": model.predict(texts, verbose=0).tolist(),
                          "savedmodel": served.numpy().tolist()}))
    """)
    env = {k: v for k, v in job_env().items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    names = ["negative", "positive"]
    for row, keras_row, served_row in zip(after["predictions"], got["keras"],
                                          got["savedmodel"], strict=True):
        want = [float(row["prob_negative"]), float(row["prob_positive"])]
        assert keras_row == pytest.approx(want, abs=1e-5)
        assert served_row == pytest.approx(want, abs=1e-5)
        assert row["prediction"] == names[max(range(2), key=lambda i: keras_row[i])]


@pytest.mark.parametrize("argv, message", [
    (["--model", "keras-hub:missing"], "was looked for at"),
    (["--model", "keras-hub:empty"], "lacks config.json"),
    (["--model", "keras-hub:no-weights"], "lacks weights (model.weights.h5)"),
    (["--model", "keras-hub:kbert", "--framework", "torch"],
     "which --framework tensorflow loads, not --framework torch"),
])
def test_bad_input_is_one_line_before_launch(work: Path, argv: list[str],
                                             message: str) -> None:
    (work / "empty").mkdir(exist_ok=True)
    no_weights = work / "no-weights"
    if not no_weights.exists():
        no_weights.mkdir()
        for name in ("config.json", "metadata.json", "tokenizer.json"):
            (no_weights / name).write_bytes((work / "kbert" / name).read_bytes())
    args = ["--data", "reviews.csv", "--text-column", "review", "--label-column", "sentiment",
            "--framework", "tensorflow", *argv]
    done = finish(start(work, "train", "-np", "2", *args, "--run-dir", "bad-run"), 120)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert not (work / "bad-run").exists()
