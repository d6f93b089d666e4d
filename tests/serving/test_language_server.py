"""A fine-tuned ``hf:`` language model served by ``hvdtrain serve``: raw UTF-8 text in (one
BYTES input), tokenized on the server with the trained tokenizer, the model in ONNX Runtime;
the same class, label and probabilities (1e-5) as ``hvdtrain predict`` for the same rows,
whether the rows come in one request (tokenized together, padded to the longest) or as
concurrent single-row requests the batcher coalesces. Served from the checkpoint (exported by
the server) and from that export as ``--model-dir``. Text that is not UTF-8 is a 400 and the
server goes on serving.

A fine-tuned ``keras-hub:`` model is served the same way from its checkpoint, exported to
``.keras`` with its preprocessor inside and run by TensorFlow.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.jobs import REPO, hvdtrain, run_job
from tests.serving import servers
from tests.serving.conftest import needs

TOLERANCE = 1e-5
NAME = "lm"


def write_pairs(path: Path, n: int, seed: int) -> Path:
    """The reviews with a second text (``context``, another review) beside each."""
    from tests.fixtures.language_models import reviews

    others = reviews(n, seed + 100)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "context", "sentiment"])
        writer.writerows((text, other, label)
                         for (text, label), (other, _) in zip(reviews(n, seed), others,
                                                              strict=True))
    return path


def fine_tune(root: Path, *args: str, rows: int = 300, pairs: bool = False) -> dict[str, Any]:
    """Trained (1 rank) on the reviews (with a second text each, for a sentence-pair model),
    and predict's answers on held-out reviews."""
    from tests.fixtures.language_models import write_reviews

    for name, n, seed in (("reviews.csv", rows, 1), ("holdout.csv", 40, 9)):
        if pairs:
            write_pairs(root / name, n, seed)
        else:
            write_reviews(root / name, n=n, seed=seed)
    run_dir = root / "run"
    pair_args = ("--text-pair-column", "context") if pairs else ()
    done = run_job(hvdtrain("train", "-np", "1", *args, "--data", str(root / "reviews.csv"),
                            "--text-column", "review", *pair_args, "--label-column",
                            "sentiment", "--run-dir", str(run_dir)), cwd=REPO, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    out = root / "predictions.jsonl"
    done = run_job(hvdtrain("predict", "--checkpoint", str(run_dir), "--data",
                            str(root / "holdout.csv"), "--output", str(out), "-np", "1"),
                   cwd=REPO, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    with (root / "holdout.csv").open(newline="") as handle:
        held = list(csv.DictReader(handle))
    return {"run_dir": run_dir, "texts": [row["review"] for row in held],
            "pairs": [row["context"] for row in held] if pairs else None,
            "predictions": [json.loads(line) for line in out.read_text().splitlines()]}


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny BERT (``hf:``, torch) fine-tuned on the reviews."""
    needs("kserve", "onnxruntime", "tritonclient", "horovod", "transformers", "onnxscript")
    from tests.fixtures.language_models import make_bert

    root = tmp_path_factory.mktemp("lm")
    make_bert(root / "bert")
    return fine_tune(root, "--model", f"hf:{root / 'bert'}", "--lr", "3e-3", "--epochs", "4")


@pytest.fixture(scope="module")
def lm_server(lm: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[servers.Server]:
    log = tmp_path_factory.mktemp("lm-server") / "serve.log"
    server = servers.start(["--checkpoint", str(lm["run_dir"]), "--name", NAME,
                            "--max-batch-delay-ms", "20"], log)
    yield server
    assert server.stop() == 0, server.output()[-3000:]


def check(lm: dict[str, Any], rows: range | list[int], result: Any) -> None:
    want = [lm["predictions"][i] for i in rows]
    names = ["negative", "positive"]
    labels = [v.decode() for v in result.as_numpy("label")]
    assert labels == [p["prediction"] for p in want]
    assert [names[c] for c in result.as_numpy("class")] == labels
    np.testing.assert_allclose(
        result.as_numpy("probabilities"),
        np.array([[float(p[f"prob_{n}"]) for n in names] for p in want], np.float32),
        atol=TOLERANCE, rtol=0)


def infer(server: servers.Server, texts: list[bytes], name: str = NAME,
          pairs: list[bytes] | None = None) -> Any:
    import tritonclient.http as http

    tensors = []
    for input_name, values in (("text", texts), ("text_pair", pairs)):
        if values is not None:
            tensors.append(http.InferInput(input_name, [len(values)], "BYTES"))
            tensors[-1].set_data_from_numpy(np.array(values, dtype=object))
    return http.InferenceServerClient(server.address).infer(name, tensors)


def test_metadata_says_bytes_in_and_names_the_labels(lm_server: servers.Server) -> None:
    status, meta = lm_server.request("GET", f"/v2/models/{NAME}")
    assert status == 200, meta
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    parameters = meta["parameters"]
    assert parameters["data_kind"] == "tokens" and parameters["format"] == "onnx"
    assert json.loads(parameters["class_names"]) == ["negative", "positive"]
    assert parameters["max_length"] == 128 and parameters["text_pair"] is False
    assert "tokenizer" in parameters["preprocessing"]


def test_text_gets_predicts_answers_in_one_batch_and_coalesced(
        lm_server: servers.Server, lm: dict[str, Any]) -> None:
    texts = [t.encode() for t in lm["texts"]]
    check(lm, range(len(texts)), infer(lm_server, texts))  # one request, padded to its longest
    check(lm, range(3, 10), infer(lm_server, texts[3:10]))
    with ThreadPoolExecutor(8) as pool:  # single rows, coalesced by the batcher
        results = list(pool.map(lambda i: infer(lm_server, [texts[i]]), range(16)))
    for i, result in enumerate(results):
        check(lm, [i], result)


def test_text_that_is_not_utf8_is_refused_and_serving_goes_on(
        lm_server: servers.Server, lm: dict[str, Any]) -> None:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as error:
        infer(lm_server, [b"a good film", b"\xff\xfe broken"])
    assert error.value.status() == "400", error.value
    assert "UTF-8" in error.value.message(), error.value
    check(lm, [0], infer(lm_server, [lm["texts"][0].encode()]))


def test_the_export_served_as_model_dir(lm_server: servers.Server, lm: dict[str, Any],
                                        tmp_path: Path) -> None:
    """The ONNX export the server made (graph, sidecar, tokenizer/) is what ``hvdtrain export
    --format onnx`` writes; served as ``--model-dir`` it answers the same."""
    cache = lm["run_dir"] / "checkpoints" / ".hvdtrain-serve"
    (export,) = cache.glob("*.onnx")
    assert (cache / f"{export.name}.tokenizer").is_dir()
    server = servers.start(["--model-dir", str(export), "--name", NAME], tmp_path / "serve.log")
    try:
        texts = [t.encode() for t in lm["texts"][:12]]
        check(lm, range(12), infer(server, texts))
        status, meta = server.request("GET", f"/v2/models/{NAME}")
        assert status == 200, meta
        assert meta["parameters"]["data_kind"] == "tokens", meta
    finally:
        assert server.stop() == 0, server.output()[-3000:]


@pytest.fixture(scope="module")
def keras_lm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny KerasHub BERT (``keras-hub:``, TensorFlow) fine-tuned on the reviews."""
    needs("kserve", "tritonclient", "horovod", "tensorflow", "keras_hub")
    from tests.fixtures.language_models import make_keras_bert

    root = tmp_path_factory.mktemp("keras-lm")
    make_keras_bert(root / "kbert")
    return fine_tune(root, "--framework", "tensorflow", "--model", f"keras-hub:{root / 'kbert'}",
                     "--lr", "2e-3", "--epochs", "2")


def test_a_keras_hub_model_takes_text_through_its_own_preprocessor(
        keras_lm: dict[str, Any], tmp_path: Path) -> None:
    """Served from its checkpoint (a ``.keras`` export with the preprocessor inside, run by
    TensorFlow): predict's answers, BYTES in, non-UTF-8 refused."""
    from tritonclient.utils import InferenceServerException

    server = servers.start(["--checkpoint", str(keras_lm["run_dir"]), "--name", NAME,
                            "--max-batch-delay-ms", "20"], tmp_path / "serve.log")
    try:
        status, meta = server.request("GET", f"/v2/models/{NAME}")
        assert status == 200, meta
        assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        assert meta["parameters"]["format"] == "keras"
        assert json.loads(meta["parameters"]["class_names"]) == ["negative", "positive"]
        texts = [t.encode() for t in keras_lm["texts"]]
        check(keras_lm, range(len(texts)), infer(server, texts))
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda i: infer(server, [texts[i]]), range(8)))
        for i, result in enumerate(results):
            check(keras_lm, [i], result)
        with pytest.raises(InferenceServerException) as error:
            infer(server, [b"\xff broken"])
        assert error.value.status() == "400", error.value
        check(keras_lm, [0], infer(server, texts[:1]))
    finally:
        assert server.stop() == 0, server.output()[-3000:]


@pytest.fixture(scope="module")
def pair_lm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny BERT fine-tuned on (review, context) pairs: 1 epoch on 64 rows (what is checked
    is that the server answers as predict does, not what the model learnt)."""
    needs("kserve", "onnxruntime", "tritonclient", "horovod", "transformers", "onnxscript")
    from tests.fixtures.language_models import make_bert

    root = tmp_path_factory.mktemp("pair-lm")
    make_bert(root / "bert")
    return fine_tune(root, "--model", f"hf:{root / 'bert'}", "--epochs", "1", rows=64,
                     pairs=True)


def test_a_sentence_pair_model_takes_text_pair_and_refuses_a_request_without_it(
        pair_lm: dict[str, Any], tmp_path: Path) -> None:
    """Two BYTES inputs, tokenized as training paired them: predict's answers for a batch and
    for coalesced single rows; without ``text_pair`` (or with it short) a 400 naming it."""
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    server = servers.start(["--checkpoint", str(pair_lm["run_dir"]), "--name", NAME,
                            "--max-batch-delay-ms", "20"], tmp_path / "serve.log")
    try:
        status, meta = server.request("GET", f"/v2/models/{NAME}")
        assert status == 200, meta
        assert [i["name"] for i in meta["inputs"]] == ["text", "text_pair"], meta
        assert meta["parameters"]["text_pair"] is True, meta
        texts = [t.encode() for t in pair_lm["texts"]]
        pairs = [t.encode() for t in pair_lm["pairs"]]
        check(pair_lm, range(len(texts)), infer(server, texts, pairs=pairs))
        with ThreadPoolExecutor(4) as pool:  # single rows, coalesced by the batcher
            results = list(pool.map(lambda i: infer(server, [texts[i]], pairs=[pairs[i]]),
                                    range(8)))
        for i, result in enumerate(results):
            check(pair_lm, [i], result)
        with pytest.raises(InferenceServerException) as error:
            infer(server, texts[:2])
        assert error.value.status() == "400", error.value
        assert "missing input 'text_pair'" in error.value.message(), error.value
        with pytest.raises(InferenceServerException) as error:
            infer(server, texts[:2], pairs=pairs[:1])
        assert error.value.status() == "400", error.value
        status, body = server.request("POST", f"/v2/models/{NAME}/infer", json.dumps(
            {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                         "data": ["a good film"]}]}))
        assert status == 400 and "text_pair" in body["error"], body
        check(pair_lm, [0], infer(server, texts[:1], pairs=pairs[:1]))
        assert http.InferenceServerClient(server.address).is_server_ready()
    finally:
        assert server.stop() == 0, server.output()[-3000:]


def test_a_keras_hub_export_served_as_model_dir(keras_lm: dict[str, Any],
                                                tmp_path: Path) -> None:
    """``hvdtrain export --format keras`` of a keras-hub checkpoint (the task with its
    preprocessor), served as ``--model-dir`` with no checkpoint beside it: the model card
    comes from the export's sidecar, and the answers are predict's."""
    export = tmp_path / "export" / "reviews.keras"
    export.parent.mkdir()
    done = run_job(hvdtrain("export", "--checkpoint", str(keras_lm["run_dir"]), "--format",
                            "keras", "--output", str(export)), cwd=REPO, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    server = servers.start(["--model-dir", str(export.parent), "--name", NAME],
                           tmp_path / "serve.log")
    try:
        status, meta = server.request("GET", f"/v2/models/{NAME}")
        assert status == 200, meta
        assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        parameters = meta["parameters"]
        assert parameters["format"] == "keras" and parameters["data_kind"] == "tokens"
        assert parameters["source"] == str(export), parameters
        assert json.loads(parameters["class_names"]) == ["negative", "positive"]
        texts = [t.encode() for t in keras_lm["texts"]]
        check(keras_lm, range(len(texts)), infer(server, texts))
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda i: infer(server, [texts[i]]), range(6)))
        for i, result in enumerate(results):
            check(keras_lm, [i], result)
    finally:
        assert server.stop() == 0, server.output()[-3000:]
