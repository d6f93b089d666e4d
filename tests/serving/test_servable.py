"""The servable seam and the loading rules, without a server or a framework: rows sent in a
request are prepared by ``predict``'s own code (the same standardisation, the same checks),
outputs split per request, and ``--model-dir`` finds exactly one export or says why not.

(KServe is not imported here: its gRPC protobuf names clash with Triton's client, which other
tests of this directory import; the protocol's checks are tested through a real server.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hvdtrain.config import TrainConfig
from hvdtrain.errors import CheckpointError, DataError
from hvdtrain.inference.card import ModelCard
from hvdtrain.inference.inputs import Inputs
from hvdtrain.serving.loading import (
    card_from_sidecar,
    default_name,
    find_export,
    training_metrics,
)
from hvdtrain.serving.servable import Classifier, TrainedInfo

MEAN = np.array([1.0, -2.0, 0.5], np.float32)
STD = np.array([2.0, 0.5, 3.0], np.float32)


def card(tmp_path: Path, kind: str = "tabular", model: str = "mlp") -> ModelCard:
    data = tmp_path / "data.csv"
    return ModelCard(tmp_path / "epoch-0003.ckpt", "torch",
                     TrainConfig(model=model, data=str(data)), 3, "data.csv", kind, 3, 3, None,
                     MEAN if kind != "text" else None, STD if kind != "text" else None,
                     ("cat", "dog", "eel"))


def classifier(tmp_path: Path, kind: str = "tabular") -> Classifier:
    return Classifier(card(tmp_path, kind), lambda x: x, "identity",
                      TrainedInfo("here", "onnx", {"val_accuracy": 0.5}))


def test_rows_are_prepared_exactly_as_predict_prepares_a_file(tmp_path: Path) -> None:
    rows = np.array([[3.5, 1.25, -7.0], [0.1, 0.2, 0.3]], np.float32)
    data = tmp_path / "data.csv"
    data.write_text("a,b,c,label\n" + "".join(f"{r[0]!r},{r[1]!r},{r[2]!r},0\n"
                                                for r in rows.tolist()))
    the_card = card(tmp_path)
    (batch,) = [b for b in Inputs(the_card, str(data), "all").batches(10) if b is not None]
    served = classifier(tmp_path).prepare({"x": rows})
    assert served.dtype == np.float32
    np.testing.assert_array_equal(served, batch.x)  # bit for bit
    np.testing.assert_array_equal(served, ((rows - MEAN) / STD).astype(np.float32))


def test_a_value_that_is_not_finite_names_its_row(tmp_path: Path) -> None:
    rows = np.zeros((3, 3), np.float32)
    rows[2, 1] = np.inf
    with pytest.raises(DataError, match=r"input 'x' row 2: feature 1 is"):
        classifier(tmp_path).prepare({"x": rows})


def test_outputs_are_class_label_and_probabilities(tmp_path: Path) -> None:
    servable = classifier(tmp_path)
    out = servable.finish(np.array([[0.1, 0.7, 0.2], [0.5, 0.5, 0.0]], np.float32))
    assert out["class"].tolist() == [1, 0]  # a tie goes to the first class, as argmax
    assert out["label"].tolist() == [b"dog", b"cat"]
    assert [s.name for s in servable.outputs] == ["class", "label", "probabilities"]
    assert servable.parameters()["class_names"] == json.dumps(["cat", "dog", "eel"])
    assert servable.parameters()["trained_val_accuracy"] == 0.5
    assert servable.version == "3"
    assert servable.finish(servable.run(servable.prepare(servable.probe())))["class"].shape \
        == (1,)


def test_text_is_utf8_and_tokenized_as_in_training(tmp_path: Path) -> None:
    servable = classifier(tmp_path, kind="text")
    assert [s.as_v2() for s in servable.inputs] == [{"name": "text", "datatype": "BYTES",
                                                    "shape": [-1]}]
    tokens = servable.prepare({"text": np.array([b"hi", "ok"], dtype=object)})
    assert tokens.dtype == np.int64 and tokens[0, :3].tolist() == [ord("h") + 1,
                                                                  ord("i") + 1, 0]
    with pytest.raises(DataError, match=r"input 'text' row 1: not UTF-8 text"):
        servable.prepare({"text": np.array([b"fine", b"\xff\xfe"], dtype=object)})


def test_the_default_name_is_url_safe(tmp_path: Path) -> None:
    assert default_name(card(tmp_path)) == "mlp-data"
    assert default_name(card(tmp_path, model="my.models:build")) == "my.models-build-data"


def test_training_metrics_come_from_the_run_directory(tmp_path: Path) -> None:
    checkpoint = tmp_path / "run" / "checkpoints" / "epoch-0002.ckpt"
    checkpoint.parent.mkdir(parents=True)
    (tmp_path / "run" / "metrics.jsonl").write_text(
        json.dumps({"epoch": 1, "val_loss": 0.9}) + "\nnot json\n"
        + json.dumps({"epoch": 2, "val_loss": 0.4, "val_accuracy": 0.9, "lr": 0.1}) + "\n")
    assert training_metrics(checkpoint, 2) == {"val_loss": 0.4, "val_accuracy": 0.9}
    assert training_metrics(checkpoint, 5) == {}
    assert training_metrics(tmp_path / "elsewhere.ckpt", 2) == {}


def test_a_model_dir_must_hold_exactly_one_export(tmp_path: Path) -> None:
    sidecar = {"format": "onnx", "framework": "torch", "class_names": ["a", "b"],
               "input": {"shape": [None, 4], "kind": "tabular"},
               "standardisation": {"mean": [0, 0, 0, 0], "std": [1, 1, 1, 1]},
               "trained": {"model": "mlp", "data": "x.csv", "epoch": 7}}
    for name in ("one.onnx", "two.onnx"):
        (tmp_path / name).write_bytes(b"")
        (tmp_path / f"{name}.json").write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match=r"holds 2 exports \(one.onnx, two.onnx\)"):
        find_export(str(tmp_path))
    model, meta = find_export(str(tmp_path / "two.onnx"))
    assert meta.name == "two.onnx.json"
    found = card_from_sidecar(model, meta, sidecar)
    assert (found.num_features, found.num_classes, found.epoch) == (4, 2, 7)
    assert found.class_names == ("a", "b") and found.mean is not None
    with pytest.raises(CheckpointError, match="not a usable hvdtrain export sidecar"):
        card_from_sidecar(model, meta, {**sidecar, "input": {"shape": [None]}})


def test_a_language_model_takes_text_and_pairs_tokenized_by_batch(tmp_path: Path) -> None:
    """A fine-tuned model (kind tokens, trained with a text pair): two BYTES inputs, decoded
    in ``prepare``; ``run`` tokenizes the whole batch at once through ``prepare_rows``."""
    config = TrainConfig(model="hf:bert", data=str(tmp_path / "r.csv"), text_pair_column="b",
                         max_length=16)
    the_card = ModelCard(tmp_path / "epoch-0001.ckpt", "torch", config, 1, "r.csv", "tokens",
                         2, 3, None, None, None, ("neg", "pos"))
    calls: list[tuple[list[str], list[str] | None]] = []

    def tokenize(texts: Any, pairs: Any) -> np.ndarray:
        calls.append((list(texts), None if pairs is None else list(pairs)))
        return np.ones((len(texts), 3, 4), np.int32)

    served = Classifier(the_card, lambda x: np.full((len(x), 2), 0.5, np.float32), "fake",
                        TrainedInfo("here", "onnx", {}), tokenize=tokenize)
    assert [s.as_v2() for s in served.inputs] == [
        {"name": "text", "datatype": "BYTES", "shape": [-1]},
        {"name": "text_pair", "datatype": "BYTES", "shape": [-1]}]
    one = served.prepare({"text": np.array([b"a", "b\u00e9".encode()], object),
                          "text_pair": np.array([b"x", b"y"], object)})
    two = served.prepare({"text": np.array([b"c"], object),
                          "text_pair": np.array([b"z"], object)})
    out = served.run(np.concatenate([one, two]))  # as the batcher coalesces them
    assert calls == [(["a", "b\u00e9", "c"], ["x", "y", "z"])]
    assert out.shape == (3, 2)
    assert served.parameters()["text_pair"] is True and served.parameters()["max_length"] == 16
    with pytest.raises(DataError, match="input 'text_pair' row 0: not UTF-8"):
        served.prepare({"text": np.array([b"ok"], object),
                        "text_pair": np.array([b"\xff"], object)})
    assert set(served.probe()) == {"text", "text_pair"}


def test_bench_serve_sends_a_text_model_one_sentence_per_input(tmp_path: Path) -> None:
    """``hvdtrain bench serve`` measures text models too: every BYTES input gets the sample
    sentence, a features model the warm-up's row; the request is one V2 JSON body."""
    from hvdtrain.serving.bench import SAMPLE_TEXT, _one_row, _request

    config = TrainConfig(model="hf:bert", data=str(tmp_path / "r.csv"), text_pair_column="b")
    pairs = Classifier(ModelCard(tmp_path / "e.ckpt", "torch", config, 1, "r.csv", "tokens", 2,
                                 3, None, None, None, ("neg", "pos")),
                       lambda x: x, "fake", TrainedInfo("here", "onnx", {}),
                       tokenize=lambda t, p: np.zeros((len(t), 3, 2), np.int64))
    for servable, want in ((pairs, {"text": "BYTES", "text_pair": "BYTES"}),
                           (classifier(tmp_path), {"x": "FP32"})):
        tensors = _one_row(servable)
        raw = _request("m", tensors, {s.name: s.datatype for s in servable.inputs})
        head, body = raw.split(b"\r\n\r\n", 1)
        assert head.startswith(b"POST /v2/models/m/infer HTTP/1.1")
        assert f"Content-Length: {len(body)}".encode() in head
        inputs = json.loads(body)["inputs"]
        assert {i["name"]: i["datatype"] for i in inputs} == want
        assert all(i["shape"][0] == 1 for i in inputs)
        if "text" in want:
            assert [i["data"] for i in inputs] == [[SAMPLE_TEXT], [SAMPLE_TEXT]]
            assert servable.prepare(tensors).shape == (1, 2)
        else:
            assert inputs[0]["data"] == tensors["x"].ravel().tolist()
