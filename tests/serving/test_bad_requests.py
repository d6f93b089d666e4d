"""Bad requests get a 4xx with the protocol's error object ``{"error": "..."}`` that says what
is wrong, and the server goes on serving."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest

from tests.serving.servers import Server, infer_body

NAME = "mlp-breast-cancer"
INFER = f"/v2/models/{NAME}/infer"
JSON = {"Content-Type": "application/json"}
ROW = np.zeros((1, 30), np.float32)


def _binary(rows: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """The binary-data extension, as Triton's client sends it."""
    header = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": list(rows.shape),
                                     "parameters": {"binary_data_size": rows.nbytes}}]}).encode()
    return header + rows.tobytes(), {"Inference-Header-Content-Length": str(len(header)),
                                     "Content-Type": "application/octet-stream"}


NAN_BODY, NAN_HEADERS = _binary(np.full((1, 30), np.nan, np.float32))

CASES: list[tuple[str, str, str, Any, dict[str, str], int, str]] = [
    ("malformed JSON", "POST", INFER, '{"inputs": [', JSON, 400, "malformed"),
    ("not a V2 request", "POST", INFER, '{"instances": [[1, 2]]}', JSON, 400, "inputs"),
    ("non-UTF-8 body", "POST", INFER, b'{"inputs": "\xff\xfe"}', JSON, 400, ""),
    ("unknown model", "POST", "/v2/models/nope/infer", infer_body(ROW), JSON, 404, "nope"),
    ("unknown model metadata", "GET", "/v2/models/nope", None, {}, 404, "nope"),
    ("unknown version", "POST", f"/v2/models/{NAME}/versions/9/infer", infer_body(ROW), JSON,
     404, "version 9"),
    ("unknown version metadata", "GET", f"/v2/models/{NAME}/versions/9", None, {}, 404,
     "version 9"),
    ("wrong input name", "POST", INFER, infer_body(ROW, name="features"), JSON, 400,
     "unknown input 'features'"),
    ("wrong shape", "POST", INFER, infer_body(np.zeros((1, 29), np.float32)), JSON, 400,
     "shape [1, 29]"),
    ("wrong rank", "POST", INFER, infer_body(np.zeros((30,), np.float32)), JSON, 400,
     "shape [30]"),
    ("wrong datatype", "POST", INFER, infer_body(ROW, datatype="FP64"), JSON, 400,
     "is FP64"),
    ("empty batch", "POST", INFER, infer_body(np.zeros((0, 30), np.float32)), JSON, 400,
     "empty batch"),
    ("data short of its shape", "POST", INFER,
     json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 30],
                             "data": [0.0] * 30}]}), JSON, 400, "does not fill"),
    ("text where numbers go", "POST", INFER,
     json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 30],
                             "data": ["a"] * 30}]}), JSON, 400, "does not fill"),
    ("more rows than --max-batch-size", "POST", INFER,
     infer_body(np.zeros((65, 30), np.float32)), JSON, 400, "--max-batch-size"),
    ("a NaN feature", "POST", INFER, NAN_BODY, NAN_HEADERS, 400, "not a finite float32"),
    ("no inputs", "POST", INFER, '{"inputs": []}', JSON, 400, "no inputs"),
    ("body over --max-body-bytes", "POST", INFER, b"x" * 70000, JSON, 413, "--max-body-bytes"),
    ("unknown path", "GET", "/v2/nothing-here", None, {}, 404, "Not Found"),
]


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "says"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_request_is_a_4xx_error_object(torch_server: Server, method: str, path: str,
                                             body: Any, headers: dict[str, str], status: int,
                                             says: str) -> None:
    got, answer = torch_server.request(method, path, body, headers)
    assert got == status, answer
    assert isinstance(answer, dict) and set(answer) == {"error"}, answer
    assert says in answer["error"], answer


def test_a_chunked_body_over_the_limit_is_refused(torch_server: Server) -> None:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", torch_server.port, timeout=30)
    chunks = (b"y" * 8192 for _ in range(10))
    connection.request("POST", INFER, body=chunks, headers={**JSON,
                                                           "Transfer-Encoding": "chunked"},
                       encode_chunked=True)
    answer = connection.getresponse()
    assert answer.status == 413
    assert "--max-body-bytes" in json.loads(answer.read())["error"]
    connection.close()


def test_the_server_keeps_serving_after_bad_requests(torch_server: Server) -> None:
    for _ in range(3):
        torch_server.request("POST", INFER, '{"inputs": [', JSON)
    status, answer = torch_server.request("POST", INFER, infer_body(ROW), JSON)
    assert status == 200, answer
    assert [o["name"] for o in answer["outputs"]] == ["class", "label", "probabilities"]
    status, answer = torch_server.request("GET", "/v2/health/ready")
    assert status == 200


def test_requested_outputs_only(torch_server: Server) -> None:
    body = json.loads(infer_body(ROW))
    body["outputs"] = [{"name": "label"}]
    status, answer = torch_server.request("POST", INFER, json.dumps(body), JSON)
    assert status == 200, answer
    assert [o["name"] for o in answer["outputs"]] == ["label"]
    body["outputs"] = [{"name": "nope"}]
    status, answer = torch_server.request("POST", INFER, json.dumps(body), JSON)
    assert status == 400 and "nope" in answer["error"], answer


def test_binary_request_round_trip(torch_server: Server) -> None:
    body, headers = _binary(np.zeros((2, 30), np.float32))
    status, answer = torch_server.request("POST", INFER, body, headers)
    assert status == 200, answer
    assert struct.calcsize("f") == 4 and answer["outputs"][0]["shape"] == [2]
