"""After training, through the real launchers, both frameworks, 1 and 2 ranks: evaluate equals
the training run's own final validation metrics; predict writes the same bytes at 1 and 2
ranks; an export, loaded in a fresh Python that cannot import hvdtrain, reproduces predict's
classes exactly and its probabilities to 1e-5.

Each framework trains once (module-scoped fixture) on a small real data set: torch on
breast-cancer (binary: precision, recall, F1, ROC AUC), TensorFlow on digits (10 classes).
"""

from __future__ import annotations

import csv
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.jobs import REPO, hvdtrain, read_summary, run_job

pytestmark = pytest.mark.distributed

RUNS = {"torch": ("breast-cancer", 2), "tensorflow": ("digits", 10)}
EXPORTS = {"torch": ["torchscript", "onnx"], "tensorflow": ["savedmodel", "keras"]}
OUTPUTS = {"torch": ".csv", "tensorflow": ".jsonl"}


@pytest.fixture(scope="module", params=list(RUNS))
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> dict[str, Any]:
    framework = request.param
    data, _ = RUNS[framework]
    run_dir = tmp_path_factory.mktemp(framework) / "run"
    done = run_job(hvdtrain("train", "-np", "2", "--framework", framework, "--data", data,
                            "--epochs", "2", "--run-dir", str(run_dir)), cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = read_summary(run_dir)
    return {"framework": framework, "data": data, "run_dir": run_dir, "summary": summary,
            "work": run_dir.parent}


def _predict(trained: dict[str, Any], np_: str, suffix: str) -> Path:
    output = trained["work"] / f"predictions-np{np_}{suffix}"
    if not output.exists():
        done = run_job(hvdtrain("predict", "--checkpoint", str(trained["run_dir"]), "--data",
                                trained["data"], "--split", "all", "--batch-size", "128",
                                "--output", str(output), "-np", np_), cwd=REPO, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    return output


def _read_predictions(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("np_", ["1", "2"])
def test_evaluate_equals_the_training_runs_validation(trained: dict[str, Any], np_: str) -> None:
    done = run_job(hvdtrain("evaluate", "--checkpoint", str(trained["run_dir"]), "--data",
                            trained["data"], "--json", "-np", np_), cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    summary = trained["summary"]
    assert result["split"] == "val" and result["ranks"] == int(np_)
    assert abs(result["loss"] - summary["val_loss"]) <= 1e-5 * summary["val_loss"], result
    assert result["accuracy"] == pytest.approx(summary["val_accuracy"], abs=1e-12)
    _, classes = RUNS[trained["framework"]]
    matrix = result["confusion_matrix"]
    assert len(matrix) == classes and all(len(row) == classes for row in matrix)
    assert sum(map(sum, matrix)) == result["samples"]
    assert sum(matrix[i][i] for i in range(classes)) / result["samples"] == result["accuracy"]
    if classes == 2:
        tp, fp, fn = matrix[1][1], matrix[0][1], matrix[1][0]
        assert result["precision"] == pytest.approx(tp / (tp + fp))
        assert result["recall"] == pytest.approx(tp / (tp + fn))
        assert 0.9 <= result["roc_auc"] <= 1.0
    else:
        assert "roc_auc" not in result


def test_predict_is_byte_identical_at_1_and_2_ranks(trained: dict[str, Any]) -> None:
    suffix = OUTPUTS[trained["framework"]]
    one, two = _predict(trained, "1", suffix), _predict(trained, "2", suffix)
    assert one.read_bytes() == two.read_bytes()
    rows = _read_predictions(one)
    _, classes = RUNS[trained["framework"]]
    assert [int(r["index"]) for r in rows] == list(range(len(rows)))  # input order
    assert len(rows) == {"breast-cancer": 569, "digits": 1797}[trained["data"]]
    assert list(rows[0]) == ["index", "prediction", *(f"prob_{c}" for c in range(classes))]
    for row in rows[:50]:
        probabilities = [float(row[f"prob_{c}"]) for c in range(classes)]
        assert abs(sum(probabilities) - 1) < 1e-5
    assert not list(one.parent.glob(".tmp-*"))  # written atomically, nothing left over


SERVE = textwrap.dedent("""
    # A serving process: no hvdtrain (importing it fails), only the export and its sidecar.
    import csv, json, sys
    class NoHvdtrain:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "hvdtrain":
                raise ImportError("hvdtrain must not be imported here")
    sys.meta_path.insert(0, NoHvdtrain())
    import numpy as np
    model_path, predictions = sys.argv[1], sys.argv[2]
    spec = json.load(open(model_path + ".json"))
    from sklearn import datasets
    raw = {"breast-cancer": datasets.load_breast_cancer, "digits": datasets.load_digits}[
        spec["trained"]["data"]]().data.astype(np.float32)
    mean = np.asarray(spec["standardisation"]["mean"], dtype=np.float32)
    std = np.asarray(spec["standardisation"]["std"], dtype=np.float32)
    x = ((raw - mean) / std).astype(spec["input"]["dtype"])
    fmt = spec["format"]
    if fmt == "torchscript":
        import torch
        with torch.no_grad():
            out = torch.jit.load(model_path)(torch.from_numpy(x)).numpy()
    elif fmt == "onnx":
        import onnxruntime
        session = onnxruntime.InferenceSession(model_path)
        out = session.run(None, {spec["input"]["name"]: x})[0]
    elif fmt == "savedmodel":
        import tensorflow as tf
        loaded = tf.saved_model.load(model_path)
        out = loaded.serve(tf.constant(x)).numpy()
    else:
        import keras
        out = np.asarray(keras.saving.load_model(model_path)(x))
    names = spec["class_names"]
    if predictions.endswith(".jsonl"):
        rows = [json.loads(line) for line in open(predictions)]
    else:
        rows = list(csv.DictReader(open(predictions, newline="")))
    expected = np.array([[float(r["prob_" + n]) for n in names] for r in rows])
    classes = [names[i] for i in out.argmax(1)]
    print(json.dumps({
        "rows": len(out), "columns": out.shape[1],
        "class_mismatches": sum(c != r["prediction"] for c, r in zip(classes, rows)),
        "worst": float(np.abs(out - expected).max()),
        "hvdtrain_loaded": any(m.split(".")[0] == "hvdtrain" for m in sys.modules)}))
""")


def test_exports_reproduce_predict_in_a_fresh_process(trained: dict[str, Any]) -> None:
    framework = trained["framework"]
    predictions = _predict(trained, "2", OUTPUTS[framework])
    script = trained["work"] / "serve.py"
    script.write_text(SERVE)
    for fmt in EXPORTS[framework]:
        model = trained["work"] / {"torchscript": "model.pt", "onnx": "model.onnx",
                                   "savedmodel": "model.savedmodel",
                                   "keras": "model.keras"}[fmt]
        done = run_job(hvdtrain("export", "--checkpoint", str(trained["run_dir"]), "--format",
                                fmt, "--output", str(model)), cwd=REPO, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        sidecar = json.loads(Path(f"{model}.json").read_text())
        assert sidecar["class_names"] == [str(c) for c in range(RUNS[framework][1])]
        assert sidecar["input"]["shape"][1] == len(sidecar["standardisation"]["mean"])
        served = run_job([sys.executable, str(script), str(model), str(predictions)],
                         cwd=trained["work"], timeout=300)
        assert served.returncode == 0, served.stderr[-3000:]
        result = json.loads(served.stdout.strip().splitlines()[-1])
        assert result["rows"] == len(_read_predictions(predictions)), (fmt, result)
        assert result["class_mismatches"] == 0, (fmt, result)
        assert result["worst"] <= 1e-5, (fmt, result)
        assert result["hvdtrain_loaded"] is False


def test_bad_inputs_are_one_line_before_any_rank(trained: dict[str, Any]) -> None:
    framework, work = trained["framework"], trained["work"]
    checkpoint = str(trained["run_dir"])
    wide = work / "wide.csv"  # one feature too many, and a label the model never saw
    features = 31 if framework == "torch" else 65
    wide.write_text(",".join([*(f"f{i}" for i in range(features)), "label"]) + "\n"
                    + ",".join(["0.5"] * features + ["1"]) + "\n")
    narrow = work / "labels.csv"
    features -= 1
    narrow.write_text(",".join([*(f"f{i}" for i in range(features)), "label"]) + "\n"
                      + ",".join(["0.5"] * features + ["1"]) + "\n"
                      + ",".join(["0.5"] * features + ["12"]) + "\n")
    other = "onnx" if framework == "tensorflow" else "keras"
    cases = [
        (["evaluate", "--checkpoint", str(work / "missing.ckpt"), "--data", "digits"], 7,
         "no such file or run directory"),
        (["evaluate", "--checkpoint", checkpoint, "--data", str(wide)], 6,
         "wide.csv:2: 31 features" if framework == "torch" else "wide.csv:2: 65 features"),
        (["evaluate", "--checkpoint", checkpoint, "--data", str(narrow)], 6,
         "labels.csv:3: label 12 is outside the trained classes"),
        (["predict", "--checkpoint", checkpoint, "--data", str(wide), "--output",
          str(work / "p.txt")], 2, "--output file type must be one of .csv, .jsonl"),
        (["export", "--checkpoint", checkpoint, "--format", other, "--output",
          str(work / "m.out")], 2, f"is a {framework} checkpoint"),
    ]
    for args, code, message in cases:
        done = run_job(hvdtrain(*args, "-np", "2") if args[0] != "export" else hvdtrain(*args),
                       cwd=REPO, timeout=120)
        assert done.returncode == code, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert lines[0].startswith("hvdtrain: error: ") and message in lines[0], (args, lines)
        assert all(line.startswith("hvdtrain: ") for line in lines), lines  # no traceback
        assert "ranks from" not in done.stderr  # nothing launched


def test_under_mpirun_and_horovodrun_each_process_is_a_rank(trained: dict[str, Any]) -> None:
    """Started by the user's launcher, the commands run as ranks (no second launch): evaluate
    under mpirun prints one JSON object (rank 0's) equal to the training run's validation;
    predict under horovodrun (Gloo) writes the same bytes as hvdtrain's own launch."""
    checkpoint, data = str(trained["run_dir"]), trained["data"]
    done = run_job(["mpirun", "--allow-run-as-root", "-np", "2", "--oversubscribe",
                    "-bind-to", "none", *hvdtrain("evaluate", "--checkpoint", checkpoint,
                                                  "--data", data, "--json")],
                   cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    objects = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(objects) == 1 and objects[0]["ranks"] == 2
    summary = trained["summary"]
    assert abs(objects[0]["loss"] - summary["val_loss"]) <= 1e-5 * summary["val_loss"]
    suffix = OUTPUTS[trained["framework"]]
    output = trained["work"] / f"under-horovodrun{suffix}"
    done = run_job(["horovodrun", "-np", "2", "-H", "localhost:2", "--gloo",
                    *hvdtrain("predict", "--checkpoint", checkpoint, "--data", data,
                              "--split", "all", "--batch-size", "128", "--output",
                              str(output))], cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert output.read_bytes() == _predict(trained, "2", suffix).read_bytes()
