"""Fine-tuning a pretrained language model (``--model hf:DIR``) through the real launchers,
then evaluate, predict and export, as a user with a checkpoint directory and a CSV would.

The model is a tiny BERT saved with ``save_pretrained`` and its WordPiece tokenizer
(``tests.fixtures.language_models``): nothing is downloaded. The labelled reviews carry one
sentiment word each, which a fine-tuned model learns.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.language_models import make_bert, write_reviews
from tests.helpers.jobs import finish, hvdtrain, job_env, read_summary, run_job, spawn

pytestmark = pytest.mark.distributed
pytest.importorskip("transformers")

# the fixture's data supports this comfortably: held-out accuracy reaches 1.0 in 4-6 epochs
ACCURACY_BAR = 0.9
FAST = ("--lr", "3e-3", "--epochs", "6", "--text-column", "review", "--label-column",
        "sentiment")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lm")
    make_bert(root / "bert")
    write_reviews(root / "reviews.csv", n=600)
    write_reviews(root / "holdout.csv", n=120, seed=9)
    return root


@pytest.fixture(scope="module")
def trained(work: Path) -> dict[str, Any]:
    """Fine-tuned at 2 ranks with mpirun; relative paths, as a user types them."""
    run_dir = work / "run"
    done = run_job(hvdtrain("train", "-np", "2", "--launcher", "mpirun", "--model", "hf:bert",
                            "--data", "reviews.csv", *FAST, "--run-dir", "run"),
                   cwd=work, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"run_dir": run_dir, "summary": read_summary(run_dir), "output": done.stdout,
            "stderr": done.stderr}


def test_fine_tuning_learns_with_identical_parameters(trained: dict[str, Any]) -> None:
    summary = trained["summary"]
    assert summary["val_accuracy"] >= ACCURACY_BAR, summary
    assert summary["parameters_identical"] is True
    assert summary["world_size"] == 2
    # the memory estimate is printed before launch, and the fine-tuning defaults applied
    assert "parameters" in trained["stderr"] and "a rank needs about" in trained["stderr"]
    config = summary["config"]
    assert config["optimizer"] == "adamw" and config["lr_schedule"] == "linear"
    assert config["warmup_ratio"] == 0.1 and config["lr_scaling"] == "none"


def test_horovodrun_and_one_rank(work: Path) -> None:
    done = run_job(hvdtrain("train", "-np", "1", "--launcher", "horovodrun", "--model",
                            "hf:bert", "--data", "reviews.csv", *FAST, "--run-dir", "run-hr1"),
                   cwd=work, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_summary(work / "run-hr1")["val_accuracy"] >= ACCURACY_BAR


def test_evaluate_predict_and_label_names(trained: dict[str, Any], work: Path) -> None:
    done = run_job(hvdtrain("evaluate", "--checkpoint", "run", "--data", "reviews.csv",
                            "--json", "-np", "2"), cwd=work, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["split"] == "val"
    assert abs(result["loss"] - trained["summary"]["val_loss"]) <= 1e-4 * max(
        trained["summary"]["val_loss"], 1e-3), result
    assert result["class_names"] == ["negative", "positive"]

    out = work / "predictions.csv"
    done = run_job(hvdtrain("predict", "--checkpoint", "run", "--data", "holdout.csv",
                            "--output", str(out), "-np", "2"), cwd=work, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    with (work / "holdout.csv").open(newline="") as handle:
        truth = [row["sentiment"] for row in csv.DictReader(handle)]
    assert len(rows) == len(truth)
    correct = sum(row["prediction"] == label for row, label in zip(rows, truth))
    assert correct / len(truth) >= ACCURACY_BAR


def test_exports_reload_without_hvdtrain(trained: dict[str, Any], work: Path) -> None:
    """``--format hf`` loads with from_pretrained and ``onnx`` with onnxruntime plus the
    tokenizer beside it, in a fresh Python that cannot import hvdtrain, and both give
    predict's probabilities."""
    predictions = work / "predictions-export.jsonl"
    done = run_job(hvdtrain("predict", "--checkpoint", "run", "--data", "holdout.csv",
                            "--output", str(predictions), "-np", "1"), cwd=work, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = [json.loads(line) for line in predictions.read_text().splitlines()]
    for fmt, name in (("hf", "exported-hf"), ("onnx", "exported.onnx")):
        done = run_job(hvdtrain("export", "--checkpoint", "run", "--format", fmt, "--output",
                                name), cwd=work, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    script = textwrap.dedent("""
        import csv, json, sys
        sys.modules["hvdtrain"] = None  # prove the exports need no hvdtrain
        import numpy as np, onnxruntime, torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        texts = [r["review"] for r in csv.DictReader(open("holdout.csv", newline=""))]
        model = AutoModelForSequenceClassification.from_pretrained("exported-hf").eval()
        tokenizer = AutoTokenizer.from_pretrained("exported-hf")
        with torch.no_grad():
            hf = torch.softmax(model(**tokenizer(texts, padding=True, truncation=True,
                                                 max_length=128, return_tensors="pt")).logits, -1)
        names = [model.config.id2label[i] for i in range(hf.shape[1])]
        side = json.load(open("exported.onnx.json"))
        tok = AutoTokenizer.from_pretrained("exported.onnx.tokenizer")
        enc = tok(texts, padding=True, truncation=True, max_length=side["input"]["max_length"],
                  return_tensors="np")
        x = np.stack([enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]], 1)
        session = onnxruntime.InferenceSession("exported.onnx")
        onnx = session.run(None, {"x": x.astype(np.int64)})[0]
        print(json.dumps({"hf": hf.numpy().tolist(), "onnx": onnx.tolist(), "names": names,
                          "sidecar_names": side["class_names"]}))
    """)
    env = {k: v for k, v in job_env().items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["names"] == ["negative", "positive"] == got["sidecar_names"]
    for row, hf, onnx in zip(expected, got["hf"], got["onnx"]):
        want = [row["prob_negative"], row["prob_positive"]]
        assert hf == pytest.approx(want, abs=1e-5)
        assert onnx == pytest.approx(want, abs=1e-5)
        assert row["prediction"] == got["names"][max(range(2), key=lambda i: hf[i])]


def test_resume_at_another_world_size_after_a_stop(work: Path) -> None:
    """SIGUSR1 stops at an agreed step with a step checkpoint (exit 75); ``--resume auto``
    continues it at 1 rank and finishes."""
    slow = ("--step-delay", "0.05", "--checkpoint-every-steps", "5")
    proc = spawn(hvdtrain("train", "-np", "2", "--model", "hf:bert", "--data", "reviews.csv",
                          *FAST, *slow, "--run-dir", "run-stop"), job_env(), work)
    checkpoints = work / "run-stop" / "checkpoints"
    import time

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if checkpoints.is_dir() and any(checkpoints.glob("*.ckpt")):
            break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGUSR1)
    done = finish(proc, 180)
    assert done.returncode == 75, done.stderr[-3000:]
    done = run_job(hvdtrain("train", "-np", "1", "--model", "hf:bert", "--data", "reviews.csv",
                            *FAST, "--run-dir", "run-stop", "--resume", "auto"),
                   cwd=work, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = read_summary(work / "run-stop")
    assert summary["resumes"] and summary["resumes"][-1]["to_world_size"] == 1
    assert summary["val_accuracy"] >= ACCURACY_BAR


@pytest.mark.parametrize("argv, message", [
    (["--model", "hf:missing"], "was looked for at"),
    (["--model", "hf:empty"], "lacks config.json"),
    (["--model", "hf:no-tokenizer"], "lacks a tokenizer"),
    (["--model", "keras-hub:bert"], "which --framework tensorflow loads"),
    (["--model", "hf:bert", "--framework", "tensorflow"], "which --framework torch loads"),
    (["--model", "hf:bert", "--text-column", "body"], "no column 'body'"),
    (["--model", "hf:bert", "--data", "one-class.csv"], "only one class"),
    (["--model", "hf:bert", "--max-length", "0"], "--max-length must be >= 2"),
])
def test_bad_input_is_one_line_before_launch(work: Path, argv: list[str],
                                             message: str) -> None:
    (work / "empty").mkdir(exist_ok=True)
    no_tokenizer = work / "no-tokenizer"
    if not no_tokenizer.exists():
        no_tokenizer.mkdir()
        for name in ("config.json", "model.safetensors"):
            (no_tokenizer / name).write_bytes((work / "bert" / name).read_bytes())
    (work / "one-class.csv").write_text("review,sentiment\n" + "good film,positive\n" * 8)
    args = ["--data", "reviews.csv", "--text-column", "review", "--label-column", "sentiment",
            *argv]
    done = run_job(hvdtrain("train", "-np", "2", *args, "--run-dir", "bad-run"), cwd=work,
                   timeout=120)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert not (work / "bad-run").exists()
