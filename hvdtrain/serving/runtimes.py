"""What runs an export: ONNX Runtime for PyTorch models, TensorFlow for Keras ones.

Each loader returns ``(run, description)``: ``run`` maps a batch of prepared rows to class
probabilities and may be called from several threads at once (an ONNX Runtime session and a
``tf.function`` both are). The framework is imported here, on use, so a server of ONNX
exports needs neither torch nor TensorFlow.

* One thread per runtime call, in both runtimes; ``--workers`` calls run at once. A batch of
  these models is far too small to gain from splitting one call across threads, and a call
  that must wake a second thread waits for a core the event loop (or another process) holds:
  measured on a busy 2-core machine, a 64-row ONNX call took 7 ms with a 2-thread pool and
  0.4 ms with one (docs/BENCHMARKS.md). ONNX Runtime's pool also does not spin.
* ONNX Runtime: one session, CPU provider; it is safe to call from several threads.
* Keras (``.keras``): the loaded model traced once by a ``tf.function`` whose batch
  dimension is free, so no batch size retraces it. SavedModel: its ``serve`` endpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Run = Callable[[np.ndarray], np.ndarray]


def load_onnx(path: Path, workers: int) -> tuple[Run, str]:
    import onnxruntime

    onnxruntime.disable_telemetry_events()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # see the module docstring
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {name: x})[0])

    return run, f"onnxruntime {onnxruntime.__version__} (CPU)"


def _tensorflow(workers: int) -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:  # one thread per call (module docstring); possible only before TF's first op
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, workers))
    except RuntimeError:
        pass
    return tf


def load_keras(path: Path, features: int, dtype: str, workers: int) -> tuple[Run, str]:
    tf = _tensorflow(workers)
    import keras

    model = keras.saving.load_model(str(path), compile=False)
    traced = tf.function(lambda x: model(x, training=False), input_signature=[
        tf.TensorSpec([None, features], tf.as_dtype(dtype))])

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(traced(x))

    return run, f"tensorflow {tf.__version__}, keras {keras.__version__}"


def load_savedmodel(path: Path, workers: int) -> tuple[Run, str]:
    tf = _tensorflow(workers)
    loaded = tf.saved_model.load(str(path))
    serve = loaded.serve

    def run(x: np.ndarray) -> np.ndarray:
        _ = loaded  # the endpoint's variables live as long as the loaded object
        return np.asarray(serve(tf.constant(x)))

    return run, f"tensorflow {tf.__version__} (SavedModel)"


# -- fine-tuned language models: raw text in ----------------------------------------------
# A text runtime takes the batch's texts as an object array shaped (rows, 2): text and second
# text (None without ``--text-pair-column``).


def load_tokenizer(directory: Path, max_length: int) -> Callable[[Any, Any], np.ndarray]:
    """An ONNX export's tokenizer (``hvdtrain export``'s ``MODEL.tokenizer/``), as training
    used it: truncating to ``max_length``, the batch padded to its longest row. A fast
    tokenizer's padding and truncation settings are state shared by every caller, so calls
    from ``--workers`` threads take turns (tokenizing is a small part of a call)."""
    import threading

    from hvdtrain.frameworks.torch.pretrained import encode
    from hvdtrain.frameworks.torch.pretrained import load_tokenizer as load

    tokenizer = load(directory)
    lock = threading.Lock()

    def tokenize(texts: Any, pairs: Any) -> np.ndarray:
        with lock:
            return encode(tokenizer, texts, pairs, max_length)

    return tokenize


def _texts(tf: Any, texts: np.ndarray, pairs: bool) -> Any:
    first = tf.constant([_str(t) for t in texts[:, 0]], tf.string)
    return (first, tf.constant([_str(t) for t in texts[:, 1]], tf.string)) if pairs else first


def _str(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def load_keras_text(path: Path, pairs: bool, workers: int) -> tuple[Run, str]:
    """A keras-hub export (``.keras``): the KerasHub task with its preprocessor, traced once
    on string tensors of any batch size (the preprocessor pads to ``--max-length``)."""
    tf = _tensorflow(workers)
    import keras
    import keras_hub  # noqa: F401  (registers the task's classes for loading)

    model = keras.saving.load_model(str(path), compile=False)
    preprocessor = model.preprocessor
    string = tf.TensorSpec([None], tf.string)
    if pairs:
        traced = tf.function(lambda a, b: model(preprocessor(x=(a, b)), training=False),
                             input_signature=[string, string])
    else:
        traced = tf.function(lambda a: model(preprocessor(x=a), training=False),
                             input_signature=[string])

    def run(texts: np.ndarray) -> np.ndarray:
        given = _texts(tf, texts, pairs)
        return np.asarray(traced(*given) if pairs else traced(given))

    return run, f"tensorflow {tf.__version__}, keras {keras.__version__} (KerasHub)"


def load_savedmodel_text(path: Path, pairs: bool, workers: int) -> tuple[Run, str]:
    """A keras-hub SavedModel: ``serve`` takes one string tensor (its tokenizer ops are
    TensorFlow Text's, registered by importing it)."""
    tf = _tensorflow(workers)
    import tensorflow_text  # noqa: F401

    loaded = tf.saved_model.load(str(path))
    serve = loaded.serve

    def run(texts: np.ndarray) -> np.ndarray:
        _ = loaded  # the endpoint's variables live as long as the loaded object
        return np.asarray(serve(_texts(tf, texts, False)))

    return run, f"tensorflow {tf.__version__} (SavedModel, TensorFlow Text)"
