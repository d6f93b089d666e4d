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

from hvdtrain.errors import ConfigError
from hvdtrain.frameworks.torch.inference import load_model, probabilities_module
from hvdtrain.types import Dataset, TrainConfig

TOLERANCE = 1e-5
PROBE_ROWS = 16


def probe_batch(data: Dataset, rows: int = PROBE_ROWS) -> np.ndarray:
    """Inputs to trace and check with: standardised-looking values, or byte tokens."""
    rng = np.random.default_rng(0)
    if data.kind == "text":
        return rng.integers(0, 257, size=(rows, data.num_features)).astype(np.int64)
    return rng.standard_normal((rows, data.num_features)).astype(np.float32)


def _head(config: TrainConfig, data: Dataset, checkpoint: Path) -> Any:
    return probabilities_module(load_model(config, data, checkpoint),
                                data.num_classes == 2).eval()


def export_torchscript(config: TrainConfig, data: Dataset, checkpoint: Path,
                       output: Path) -> dict[str, Any]:
    import torch

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
    probe = probe_batch(data)
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"--format onnx needs the onnx and onnxscript packages ({exc})",
                          hint="pip install onnx onnxscript onnxruntime (the 'ml' extra)"
                          ) from None
    batch = torch.export.Dim("batch")
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "torchvision is not installed" and alike
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            # one self-contained file: weights inside, not in a .data file beside it
            torch.onnx.export(head, (torch.from_numpy(probe),), str(output), dynamo=True,
                              external_data=False, input_names=["x"],
                              output_names=["probabilities"], dynamic_shapes=({0: batch},),
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
