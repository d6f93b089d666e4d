"""Models for the serving tests, trained once per session with ``hvdtrain train`` (1 rank, 2
epochs): torch's MLP on breast-cancer (binary, served from its checkpoint, so exported to
ONNX by the server), TensorFlow's CNN on digits (10 classes, served from a ``.keras``
export) and torch's byte-token transformer on synthetic-text (text in, 1 epoch).
``hvdtrain predict`` on every sample of each is what the servers must reproduce.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.jobs import REPO, hvdtrain, run_job
from tests.serving import servers


def needs(*modules: str) -> None:
    """Skip unless installed; found, not imported: KServe's and Triton's gRPC modules register
    the same protobuf names, so this process must never import KServe (the server does)."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


def _train(tmp: Path, framework: str, model: str, data: str, epochs: str = "2") -> Path:
    needs("kserve", "onnxruntime", "tritonclient", "horovod")  # train needs Horovod at 1 rank
    run_dir = tmp / "run"
    done = run_job(hvdtrain("train", "-np", "1", "--framework", framework, "--model", model,
                            "--data", data, "--epochs", epochs, "--run-dir", str(run_dir)),
                   cwd=REPO, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


def _predict(run_dir: Path, data: str, output: Path) -> list[dict[str, Any]]:
    done = run_job(hvdtrain("predict", "--checkpoint", str(run_dir), "--data", data, "--split",
                            "all", "--output", str(output), "-np", "1"), cwd=REPO, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    if output.suffix == ".jsonl":
        return [json.loads(line) for line in output.read_text().splitlines()]
    with output.open(newline="") as handle:
        return list(csv.DictReader(handle))


def raw_rows(data: str) -> np.ndarray:
    """The data set's raw features, as ``hvdtrain predict`` reads the built-in set."""
    from sklearn import datasets

    loader = {"breast-cancer": datasets.load_breast_cancer, "digits": datasets.load_digits}
    return np.asarray(loader[data]().data, dtype=np.float32)


@pytest.fixture(scope="session")
def torch_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("torch")
    run_dir = _train(tmp, "torch", "mlp", "breast-cancer")
    return {"run_dir": run_dir, "data": "breast-cancer", "name": "mlp-breast-cancer",
            "x": raw_rows("breast-cancer"), "classes": 2,
            "predictions": _predict(run_dir, "breast-cancer", tmp / "predictions.csv")}


@pytest.fixture(scope="session")
def tf_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    needs("tensorflow")
    tmp = tmp_path_factory.mktemp("tensorflow")
    run_dir = _train(tmp, "tensorflow", "cnn", "digits")
    export = tmp / "export" / "model.keras"
    export.parent.mkdir()
    done = run_job(hvdtrain("export", "--checkpoint", str(run_dir), "--format", "keras",
                            "--output", str(export)), cwd=REPO, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"run_dir": run_dir, "export": export, "data": "digits", "name": "cnn-digits",
            "x": raw_rows("digits"), "classes": 10,
            "predictions": _predict(run_dir, "digits", tmp / "predictions.jsonl")}


@pytest.fixture(scope="session")
def torch_server(torch_model: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[servers.Server]:
    """The torch checkpoint served as it is (the server exports it), REST and gRPC."""
    log = tmp_path_factory.mktemp("torch-server") / "serve.log"
    server = servers.start(["--checkpoint", str(torch_model["run_dir"]),
                            "--max-body-bytes", "65536"], log, grpc=True)
    yield server
    assert server.stop() == 0, server.output()[-3000:]


@pytest.fixture(scope="session")
def tf_server(tf_model: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[servers.Server]:
    """The TensorFlow model served from the directory holding its export."""
    log = tmp_path_factory.mktemp("tf-server") / "serve.log"
    server = servers.start(["--model-dir", str(tf_model["export"].parent)], log)
    yield server
    assert server.stop() == 0, server.output()[-3000:]


@pytest.fixture(scope="session")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The byte-token transformer on synthetic-text (1 epoch), and predict's answers."""
    tmp = tmp_path_factory.mktemp("text")
    run_dir = _train(tmp, "torch", "transformer", "synthetic-text", epochs="1")
    from hvdtrain.training.datasets import synthetic_text

    texts, _ = synthetic_text(seed=42)  # the training seed: predict reads the same texts
    return {"run_dir": run_dir, "name": "transformer-synthetic-text", "texts": texts,
            "classes": 2,
            "predictions": _predict(run_dir, "synthetic-text", tmp / "predictions.jsonl")}


@pytest.fixture(scope="session")
def text_server(text_model: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[servers.Server]:
    log = tmp_path_factory.mktemp("text-server") / "serve.log"
    server = servers.start(["--checkpoint", str(text_model["run_dir"])], log, grpc=True)
    yield server
    assert server.stop() == 0, server.output()[-3000:]
