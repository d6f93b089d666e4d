"""The byte-token transformer served from its checkpoint: text in (a BYTES input, UTF-8,
tokenized on the server as training tokenized it), the same answers as ``hvdtrain predict``,
over HTTP and gRPC; text that is not UTF-8 is a 400 / INVALID_ARGUMENT."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.serving.servers import Server
from tests.serving.test_torch_server import check


def test_metadata_says_text_in(text_server: Server, text_model: dict[str, Any]) -> None:
    status, meta = text_server.request("GET", f"/v2/models/{text_model['name']}")
    assert status == 200, meta
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert meta["parameters"]["data_kind"] == "text"


def test_text_gets_predicts_answers_over_http_and_grpc(text_server: Server,
                                                       text_model: dict[str, Any]) -> None:
    import tritonclient.http as http

    grpc = pytest.importorskip("tritonclient.grpc")
    texts = text_model["texts"]
    rows = range(0, 256)
    batch = np.array([texts[i].encode() for i in rows], dtype=object)
    client = http.InferenceServerClient(text_server.address)
    for start in range(0, len(batch), 64):
        part = range(start, start + 64)
        tensor = http.InferInput("text", [64], "BYTES")
        tensor.set_data_from_numpy(batch[start:start + 64])
        result = client.infer(text_model["name"], [tensor])
        check(text_model, part, result.as_numpy("class"), result.as_numpy("label"),
              result.as_numpy("probabilities"))
    remote = grpc.InferenceServerClient(f"127.0.0.1:{text_server.grpc_port}")
    tensor = grpc.InferInput("text", [64], "BYTES")
    tensor.set_data_from_numpy(batch[:64])
    result = remote.infer(text_model["name"], [tensor])
    check(text_model, range(64), result.as_numpy("class"), result.as_numpy("label"),
          result.as_numpy("probabilities"))


def test_text_that_is_not_utf8_is_refused(text_server: Server,
                                          text_model: dict[str, Any]) -> None:
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    grpc = pytest.importorskip("tritonclient.grpc")
    bad = np.array([b"fine", b"\xff\xfe broken"], dtype=object)
    tensor = http.InferInput("text", [2], "BYTES")
    tensor.set_data_from_numpy(bad)
    with pytest.raises(InferenceServerException) as error:
        http.InferenceServerClient(text_server.address).infer(text_model["name"], [tensor])
    assert error.value.status() == "400" and "UTF-8" in error.value.message(), error.value
    remote = grpc.InferenceServerClient(f"127.0.0.1:{text_server.grpc_port}")
    tensor = grpc.InferInput("text", [2], "BYTES")
    tensor.set_data_from_numpy(bad)
    with pytest.raises(grpc.InferenceServerException) as failed:
        remote.infer(text_model["name"], [tensor])
    assert failed.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "row 1: not UTF-8 text" in failed.value.message()
    status, _ = text_server.request("GET", "/v2/health/ready")
    assert status == 200
