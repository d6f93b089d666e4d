"""TensorFlow / Keras 3 without Horovod: what the launcher's checks and the adapter share.

``hvdtrain.train_launcher.modelcheck`` runs ``build``/``output_shape``/``check_checkpoint_fits``
in a subprocess on the launching host; the adapter calls the same ``build`` and ``read_checkpoint``
in each rank. Checkpoints are ``.npz`` files (a JSON ``meta`` entry and one array per
variable), read with ``allow_pickle=False``: reading one needs NumPy only, so ``read_meta`` and
``read_checkpoint`` run without TensorFlow. Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from hvdtrain.config import TrainConfig
from hvdtrain.errors import CheckpointError
from hvdtrain.frameworks.models import build_model
from hvdtrain.pretrained import is_pretrained
from hvdtrain.types import Dataset, DeviceChoice

# --precision → Keras dtype policy: float32 variables, the computation in the named type
POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def _first_line(exc: BaseException) -> str:
    return ((str(exc).strip().splitlines() or [exc.__class__.__name__])[0])[:200]


def _read(path: Path, arrays: bool) -> dict[str, Any]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            loaded = ([archive[k] for k in sorted(k for k in archive.files if k != "meta")]
                      if arrays else [])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({_first_line(exc)})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: not an hvdtrain checkpoint")
    return {**meta, "arrays": loaded} if arrays else meta


def pin_device(tf: Any, choice: DeviceChoice, threads: int) -> str:
    """Make only the chosen GPU visible (or none), with ``threads`` intra-op threads and
    deterministic ops; the device name for the placement report. Before any op runs."""
    device = "cpu"
    gpus = tf.config.list_physical_devices("GPU")
    if choice.kind == "cuda" and choice.index is not None and choice.index < len(gpus):
        tf.config.set_visible_devices(gpus[choice.index], "GPU")
        tf.config.experimental.set_memory_growth(gpus[choice.index], True)
        device = f"/GPU:{choice.index}"
    elif gpus:
        tf.config.set_visible_devices([], "GPU")
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.experimental.enable_op_determinism()  # resume must equal an unbroken run
    return device


class TensorFlowOffline:
    name = "tensorflow"

    def available(self) -> str | None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
        except ImportError as exc:
            return f"tensorflow is not importable here ({exc})"
        return None

    def build(self, config: TrainConfig, data: Dataset) -> Any:
        """The model, seeded, its layers under ``--precision``'s dtype policy (float32
        variables); a ``keras-hub:`` preset with the frozen parts not trainable."""
        if is_pretrained(config.model):
            from hvdtrain.frameworks.tensorflow import pretrained

            pretrained.keras_hub()  # KERAS_BACKEND and offline mode before Keras loads
        import keras

        keras.utils.set_random_seed(config.seed)  # same init everywhere; broadcast makes sure
        if is_pretrained(config.model):
            model = pretrained.build(config.model, data.num_classes, data.label_names,
                                     POLICIES[config.precision])
            pretrained.freeze(model, config.freeze_embeddings, config.freeze_layers)
            return model
        from hvdtrain.frameworks.tensorflow.models import BUILDERS

        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(POLICIES[config.precision])  # layers keep it when made
        try:
            return build_model(config.model, data, BUILDERS, keras.Model, "keras.Model")
        finally:
            keras.config.set_dtype_policy(previous)

    def output_shape(self, model: Any, x: np.ndarray) -> tuple[int, ...]:
        out = model(x, training=False)
        shape = getattr(out, "shape", None)
        return tuple(int(d) for d in shape) if shape is not None else ()

    def read_meta(self, path: Path) -> dict[str, Any]:
        return _read(path, arrays=False)

    def read_checkpoint(self, path: Path) -> dict[str, Any]:
        return _read(path, arrays=True)

    def check_checkpoint_fits(self, model: Any, payload: dict[str, Any]) -> None:
        """The model's variables come first in a checkpoint (the optimizer's follow)."""
        variables = list(model.variables)
        arrays = payload.get("arrays", [])
        fits = len(arrays) >= len(variables) and all(
            tuple(a.shape) == tuple(v.shape) for a, v in zip(arrays, variables, strict=False))
        if not fits:
            raise CheckpointError("the checkpoint does not fit this model "
                                  f"({len(arrays)} arrays for {len(variables)} model variables)")


OFFLINE = TensorFlowOffline()
