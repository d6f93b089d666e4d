"""A TensorFlow CNN served from the directory holding its ``.keras`` export (TensorFlow runs
it): metadata from the sidecar, and every prediction equal to ``hvdtrain predict``'s."""

from __future__ import annotations

import json
from typing import Any

from tests.serving.servers import Server
from tests.serving.test_torch_server import check


def test_metadata_comes_from_the_export_sidecar(tf_server: Server,
                                                tf_model: dict[str, Any]) -> None:
    status, meta = tf_server.request("GET", f"/v2/models/{tf_model['name']}")
    assert status == 200, meta
    assert meta["versions"] == ["2"] and meta["platform"].startswith("tensorflow")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["outputs"][2] == {"name": "probabilities", "datatype": "FP32",
                                  "shape": [-1, 10]}
    parameters = meta["parameters"]
    assert json.loads(parameters["class_names"]) == [str(c) for c in range(10)]
    assert parameters["model"] == "cnn" and parameters["data_kind"] == "image"
    assert parameters["format"] == "keras" and parameters["source"].endswith("model.keras")
    # the export names the checkpoint it came from: the run's metrics are found through it
    summary = json.loads((tf_model["run_dir"] / "summary.json").read_text())
    assert parameters["trained_val_accuracy"] == summary["val_accuracy"]


def test_inference_equals_predict(tf_server: Server, tf_model: dict[str, Any]) -> None:
    import tritonclient.http as http

    client = http.InferenceServerClient(tf_server.address)
    x = tf_model["x"]
    for start in range(0, len(x), 64):
        rows = range(start, min(start + 64, len(x)))
        tensor = http.InferInput("x", [len(rows), 64], "FP32")
        tensor.set_data_from_numpy(x[start:rows.stop])
        result = client.infer(tf_model["name"], [tensor])
        check(tf_model, rows, result.as_numpy("class"), result.as_numpy("label"),
              result.as_numpy("probabilities"))
