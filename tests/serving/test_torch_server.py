"""A torch checkpoint served by ``hvdtrain serve`` (exported to ONNX by the server), through real
clients: curl for health, Triton's HTTP and gRPC clients for metadata and inference. Every
prediction equals ``hvdtrain predict``'s for the same rows: the same class, the same label,
probabilities within 1e-5 (ONNX Runtime against torch); also under concurrent single-row
requests, which the batcher coalesces and splits back.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from tests.serving.servers import Server, infer_body

TOLERANCE = 1e-5


def expected(model: dict[str, Any], rows: range | list[int]) -> tuple[list[str], np.ndarray]:
    predictions = [model["predictions"][i] for i in rows]
    labels = [str(p["prediction"]) for p in predictions]
    probabilities = np.array([[float(p[f"prob_{c}"]) for c in range(model["classes"])]
                              for p in predictions], dtype=np.float32)
    return labels, probabilities


def check(model: dict[str, Any], rows: range | list[int], classes: np.ndarray, labels: Any,
          probabilities: np.ndarray) -> None:
    want_labels, want_probabilities = expected(model, rows)
    got_labels = [v.decode() if isinstance(v, bytes) else str(v) for v in labels]
    assert got_labels == want_labels
    assert [str(c) for c in classes] == want_labels  # class names are the ids here
    np.testing.assert_allclose(probabilities, want_probabilities, atol=TOLERANCE, rtol=0)


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_health_with_curl(torch_server: Server) -> None:
    for path, body in (("/v2/health/live", {"live": True}), ("/v2/health/ready", {"ready": True})):
        out = subprocess.run(["curl", "-sf", f"http://{torch_server.address}{path}"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == body


def test_server_and_model_metadata(torch_server: Server, torch_model: dict[str, Any]) -> None:
    import tritonclient.http as http

    client = http.InferenceServerClient(torch_server.address)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(torch_model["name"])
    assert client.is_model_ready(torch_model["name"], "2")
    assert client.get_server_metadata()["extensions"] is not None
    meta = client.get_model_metadata(torch_model["name"])
    assert meta["name"] == torch_model["name"] and meta["versions"] == ["2"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 30]}]
    assert meta["outputs"] == [{"name": "class", "datatype": "INT64", "shape": [-1]},
                               {"name": "label", "datatype": "BYTES", "shape": [-1]},
                               {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}]
    assert meta["platform"].startswith("onnxruntime")
    parameters = meta["parameters"]
    assert json.loads(parameters["class_names"]) == ["0", "1"]
    assert parameters["data"] == "breast-cancer" and parameters["epoch"] == 2
    assert parameters["framework"] == "torch" and parameters["format"] == "onnx"
    summary = json.loads((torch_model["run_dir"] / "summary.json").read_text())
    assert parameters["trained_val_accuracy"] == summary["val_accuracy"]
    assert client.get_model_metadata(torch_model["name"], "2") == meta


def test_inference_equals_predict_binary_and_json(torch_server: Server,
                                                  torch_model: dict[str, Any]) -> None:
    import tritonclient.http as http

    client = http.InferenceServerClient(torch_server.address)
    x = torch_model["x"]
    for start in range(0, len(x), 64):
        rows = range(start, min(start + 64, len(x)))
        tensor = http.InferInput("x", [len(rows), 30], "FP32")
        tensor.set_data_from_numpy(x[start:rows.stop], binary_data=True)
        outputs = [http.InferRequestedOutput(n, binary_data=True)
                   for n in ("class", "label", "probabilities")]
        result = client.infer(torch_model["name"], [tensor], outputs=outputs)
        check(torch_model, rows, result.as_numpy("class"), result.as_numpy("label"),
              result.as_numpy("probabilities"))
    # plain JSON (no binary extension), on the versioned path
    rows = range(100, 110)
    status, body = torch_server.request(
        "POST", f"/v2/models/{torch_model['name']}/versions/2/infer",
        infer_body(x[100:110]), {"Content-Type": "application/json"})
    assert status == 200, body
    assert body["model_version"] == "2"
    out = {o["name"]: o for o in body["outputs"]}
    check(torch_model, rows, np.array(out["class"]["data"]), out["label"]["data"],
          np.array(out["probabilities"]["data"], dtype=np.float32).reshape(10, 2))


def test_concurrent_single_rows_are_batched_and_each_gets_its_own(
        torch_server: Server, torch_model: dict[str, Any]) -> None:
    import tritonclient.http as http

    x = torch_model["x"]
    picked = list(range(0, len(x), 3))

    def one(i: int) -> tuple[int, Any]:
        client = http.InferenceServerClient(torch_server.address)
        tensor = http.InferInput("x", [1, 30], "FP32")
        tensor.set_data_from_numpy(x[i:i + 1])
        result = client.infer(torch_model["name"], [tensor])
        return i, result

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, picked))
    classes = np.concatenate([r.as_numpy("class") for _, r in results])
    labels = np.concatenate([r.as_numpy("label") for _, r in results])
    probabilities = np.concatenate([r.as_numpy("probabilities") for _, r in results])
    check(torch_model, picked, classes, labels, probabilities)
    _, text = torch_server.request("GET", "/metrics")
    metrics = text.decode()
    count = _sample(metrics, "hvdtrain_serve_batch_requests_count")
    total = _sample(metrics, "hvdtrain_serve_batch_requests_sum")
    assert total >= len(picked) and count >= 1  # every request went through the batcher


def _sample(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_grpc_metadata_and_inference_equal_predict(torch_server: Server,
                                                   torch_model: dict[str, Any]) -> None:
    grpc = pytest.importorskip("tritonclient.grpc")
    client = grpc.InferenceServerClient(f"127.0.0.1:{torch_server.grpc_port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(torch_model["name"])
    meta = client.get_model_metadata(torch_model["name"], as_json=True)
    assert [i["name"] for i in meta["inputs"]] == ["x"]
    assert [o["name"] for o in meta["outputs"]] == ["class", "label", "probabilities"]
    x = torch_model["x"]
    rows = range(200, 264)
    tensor = grpc.InferInput("x", [64, 30], "FP32")
    tensor.set_data_from_numpy(x[200:264])
    result = client.infer(torch_model["name"], [tensor])
    check(torch_model, rows, result.as_numpy("class"), result.as_numpy("label"),
          result.as_numpy("probabilities"))
    with pytest.raises(grpc.InferenceServerException) as error:
        bad = grpc.InferInput("x", [1, 29], "FP32")
        bad.set_data_from_numpy(x[:1, :29])
        client.infer(torch_model["name"], [bad])
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "shape [1, 29]" in error.value.message()
    with pytest.raises(grpc.InferenceServerException) as error:
        client.infer(torch_model["name"], [tensor], model_version="7")
    assert error.value.status() == "StatusCode.NOT_FOUND"


def test_metrics_count_requests_latency_batches_and_queue(torch_server: Server) -> None:
    status, text = torch_server.request("GET", "/metrics")
    assert status == 200
    metrics = text.decode()
    for name in ("hvdtrain_serve_requests_total", "hvdtrain_serve_request_seconds_bucket",
                 "hvdtrain_serve_batch_rows_bucket", "hvdtrain_serve_queue_rows",
                 "hvdtrain_serve_queue_requests", "hvdtrain_serve_inflight_requests",
                 "request_predict_seconds"):  # the last one is KServe's own
        assert name in metrics, name
    assert 'protocol="http",status="200"' in metrics
    assert 'protocol="grpc"' in metrics or torch_server.grpc_port is None


def test_every_request_has_an_access_log_line(torch_server: Server) -> None:
    torch_server.request("GET", "/v2/health/live?probe=access-log")
    lines = [line for line in torch_server.output().splitlines()
             if "GET /v2/health/live?probe=access-log HTTP/1.1" in line]
    assert len(lines) == 1 and " 200 " in lines[0], lines
