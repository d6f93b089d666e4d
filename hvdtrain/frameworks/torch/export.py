"""PyTorch exports: TorchScript and ONNX files of the checkpoint's model with its probability
head (``inference.probabilities_module``), so a serving process gets class probabilities.

ONNX goes through torch's ``torch.export``-based exporter (the default since torch 2.9; it
needs the ``onnx`` and ``onnxscript`` packages, in the ``ml`` extra) with a dynamic batch
dimension. When onnxruntime is installed the file is loaded and run on a probe batch and must
agree with torch to 1e-5, or the export is an error. Importing this module does not import
torch.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from hvdtrain.config import TrainConfig
from hvdtrain.errors import ConfigError
from hvdtrain.frameworks.torch.inference import load_model, probabilities_module
from hvdtrain.types import TOKENS, Dataset

TOLERANCE = 1e-5
PROBE_ROWS = 16


def probe_batch(data: Dataset, rows: int = PROBE_ROWS, model: str = "",
                max_length: int = 128) -> np.ndarray:
    """Inputs to trace and check with: standardised-looking values, byte tokens, or texts of
    several lengths through a pretrained model's tokenizer."""
    rng = np.random.default_rng(0)
    if data.kind == TOKENS:
        from hvdtrain.frameworks.torch.pretrained import encode_texts

        texts = [" ".join(["probe"] + ["text"] * int(n)) for n in rng.integers(1, 12, rows)]
        return encode_texts(model, texts, None, max_length).astype(np.int64)
    if data.kind == "text":
        return rng.integers(0, 257, size=(rows, data.num_features)).astype(np.int64)
    return rng.standard_normal((rows, data.num_features)).astype(np.float32)


def _head(config: TrainConfig, data: Dataset, checkpoint: Path) -> Any:
    model = load_model(config, data, checkpoint)
    if data.kind == TOKENS:
        model.trim = False  # every row as given: no data-dependent shapes in the graph
    return probabilities_module(model, data.num_classes == 2).eval()


def _refuse_tokens(data: Dataset, fmt: str) -> None:
    if data.kind == TOKENS:
        raise ConfigError(f"--format {fmt} does not export a pretrained language model",
                          hint="use --format hf (a save_pretrained directory) or onnx")


def save_tokenizer(config: TrainConfig, directory: Path) -> None:
    """The tokenizer an ONNX export's inputs come from, saved where the export says."""
    from hvdtrain.frameworks.torch.pretrained import load_tokenizer, model_directory

    load_tokenizer(model_directory(config.model)).save_pretrained(str(directory))


def export_hf(config: TrainConfig, data: Dataset, checkpoint: Path,
              output: Path) -> dict[str, Any]:
    """A ``save_pretrained`` directory (model, tokenizer, label names), checked by loading it
    back with ``from_pretrained`` and comparing its probabilities with the checkpoint's."""
    import torch

    from hvdtrain.frameworks.torch.pretrained import export_pretrained

    if data.kind != TOKENS:
        raise ConfigError("--format hf exports a fine-tuned hf: model; this checkpoint is "
                          f"--model {config.model}", hint="use --format onnx or torchscript")
    head = _head(config, data, checkpoint)
    output.mkdir(parents=True, exist_ok=True)
    export_pretrained(head.model, config.model, output)
    from transformers import AutoModelForSequenceClassification

    probe = probe_batch(data, model=config.model, max_length=config.max_length)
    reloaded = AutoModelForSequenceClassification.from_pretrained(
        str(output), local_files_only=True).eval()
    with torch.no_grad():
        expected = head(torch.from_numpy(probe)).numpy()
        inputs = {"input_ids": torch.from_numpy(probe[:, 0]),
                  "attention_mask": torch.from_numpy(probe[:, 1])}
        if head.model.uses_token_types:
            inputs["token_type_ids"] = torch.from_numpy(probe[:, 2])
        got = torch.softmax(reloaded(**inputs).logits, -1).numpy()
    worst = float(np.max(np.abs(got - expected)))
    if not worst <= TOLERANCE:
        raise ConfigError(f"the hf export disagrees with the checkpoint (largest difference "
                          f"{worst:g})")
    return {"load": "transformers.AutoModelForSequenceClassification.from_pretrained(PATH) "
            "and AutoTokenizer.from_pretrained(PATH)", "input_name": "text",
            "output_name": "logits",
            "check": f"reloaded with from_pretrained: {len(probe)} probe rows agree "
            f"(largest difference {worst:.1e})"}


def export_torchscript(config: TrainConfig, data: Dataset, checkpoint: Path,
                       output: Path) -> dict[str, Any]:
    import torch

    _refuse_tokens(data, "torchscript")
    head = _head(config, data, checkpoint)
    example = torch.from_numpy(probe_batch(data))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about python values in user models
        traced = torch.jit.trace(head, example)
    # into memory, then a Python write: torch.jit.save to a path writes the zip's end in a
    # C++ destructor, where a full disk aborts the process instead of raising
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    output.write_bytes(buffer.getvalue())
    return {"load": "torch.jit.load(PATH)(x)", "input_name": "x",
            "output_name": "probabilities", "check": "traced with torch.jit.trace"}


def export_onnx(config: TrainConfig, data: Dataset, checkpoint: Path,
                output: Path) -> dict[str, Any]:
    import torch

    head = _head(config, data, checkpoint)
    probe = probe_batch(data, model=config.model, max_length=config.max_length)
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"--format onnx needs the onnx and onnxscript packages ({exc})",
                          hint="pip install onnx onnxscript onnxruntime (the 'ml' extra)"
                          ) from None
    batch = torch.export.Dim("batch")
    shapes = {0: batch, 2: torch.export.Dim("length", max=4096)} if data.kind == TOKENS else {
        0: batch}
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "torchvision is not installed" and alike
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            # one self-contained file: weights inside, not in a .data file beside it
            torch.onnx.export(head, (torch.from_numpy(probe),), str(output), dynamo=True,
                              external_data=False, input_names=["x"],
                              output_names=["probabilities"], dynamic_shapes=(shapes,),
                              verbose=False)
    finally:
        quiet.setLevel(level)
    with torch.no_grad():
        expected = head(torch.from_numpy(probe)).numpy()
    return {"load": "onnxruntime.InferenceSession(PATH).run(None, {'x': x})[0]",
            "input_name": "x", "output_name": "probabilities",
            "check": check_with_onnxruntime(output, probe, expected)}


def check_with_onnxruntime(path: Path, probe: np.ndarray, expected: np.ndarray) -> str:
    try:
        import onnxruntime
    except ImportError:
        return "not checked: onnxruntime is not installed"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": probe})[0]
    worst = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else np.inf
    if not worst <= TOLERANCE:
        raise ConfigError(f"the ONNX export disagrees with torch: outputs {got.shape} vs "
                          f"{expected.shape}, largest difference {worst:g}",
                          hint="try --format torchscript")
    return (f"onnxruntime {onnxruntime.__version__}: {len(probe)} probe rows agree with torch "
            f"(largest difference {worst:.1e})")
