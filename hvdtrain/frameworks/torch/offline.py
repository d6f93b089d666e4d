"""PyTorch without Horovod: what the launcher's checks and the adapter share.

``hvdtrain.train_launcher.modelcheck`` runs ``build``/``output_shape``/``read_checkpoint`` in a
subprocess on the launching host; the adapter calls the same ``build`` and ``read_checkpoint``
in each rank, so both see the same model and the same errors. Importing this module does not
import torch: ``read_meta`` runs in the CLI process itself.

``read_meta`` reads the metadata of a ``torch.save`` file without torch: the pickle inside the
zip is read by an unpickler that resolves *every* global to an inert placeholder (nothing is
imported or called, tensors become placeholders), so it is as safe as ``weights_only`` loading
and needs no framework. The ranks still read the file with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from hvdtrain.config import TrainConfig
from hvdtrain.errors import CheckpointError
from hvdtrain.frameworks.models import build_model
from hvdtrain.frameworks.torch.models import BUILDERS
from hvdtrain.pretrained import is_pretrained
from hvdtrain.types import Dataset

PICKLE_MEMBER = "data.pkl"  # catalog.FRAMEWORKS' checkpoint_marker for torch


def _first_line(exc: BaseException) -> str:
    return ((str(exc).strip().splitlines() or [exc.__class__.__name__])[0])[:200]


class _Placeholder(dict):
    """Stands for any object the pickle would build (tensors, storages, OrderedDicts)."""

    def __init__(self, *_args: Any, **_kw: Any) -> None:
        super().__init__()

    def __setstate__(self, _state: Any) -> None:
        pass


class _InertUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return _Placeholder  # never imports or calls anything of the file's choosing

    def persistent_load(self, pid: Any) -> Any:
        return None  # tensor storages: not needed for the metadata


def read_meta_from(handle: IO[bytes], path: Path) -> dict[str, Any]:
    try:
        payload = _InertUnpickler(handle).load()
    except Exception as exc:  # a damaged pickle raises many kinds
        raise CheckpointError(f"{path}: cannot read checkpoint ({_first_line(exc)})") from None
    if not isinstance(payload, dict) or isinstance(payload, _Placeholder):
        raise CheckpointError(f"{path}: not an hvdtrain checkpoint")
    return {k: v for k, v in payload.items() if k not in ("model", "optimizer", "rng")}


class TorchOffline:
    name = "torch"

    def available(self) -> str | None:
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            return f"torch is not importable here ({exc})"
        return None

    def build(self, config: TrainConfig, data: Dataset) -> Any:
        import torch

        torch.manual_seed(config.seed)  # same init everywhere; broadcast makes it certain
        if is_pretrained(config.model):
            from hvdtrain.frameworks.torch import pretrained

            model = pretrained.build(config.model, data.num_classes, data.label_names)
            pretrained.freeze(model, config.freeze_embeddings, config.freeze_layers)
            return model
        return build_model(config.model, data, BUILDERS, torch.nn.Module, "torch.nn.Module")

    def output_shape(self, model: Any, x: np.ndarray) -> tuple[int, ...]:
        import torch

        model.eval()
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        with torch.no_grad():
            out = model(torch.from_numpy(x).to(device))
        return tuple(int(d) for d in out.shape) if isinstance(out, torch.Tensor) else ()

    def read_meta(self, path: Path) -> dict[str, Any]:
        try:
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist()
                         if n == PICKLE_MEMBER or n.endswith("/" + PICKLE_MEMBER)]
                if not names:
                    raise CheckpointError(f"{path}: not an hvdtrain checkpoint")
                with archive.open(names[0]) as handle:
                    return read_meta_from(handle, path)
        except (OSError, zipfile.BadZipFile, EOFError) as exc:
            raise CheckpointError(f"{path}: cannot read checkpoint ({_first_line(exc)})") from None

    def read_checkpoint(self, path: Path) -> dict[str, Any]:
        import torch

        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many kinds for a bad file
            raise CheckpointError(f"{path}: cannot read checkpoint ({_first_line(exc)})") from None
        if not isinstance(payload, dict) or "model" not in payload:
            raise CheckpointError(f"{path}: not an hvdtrain checkpoint")
        return payload

    def check_checkpoint_fits(self, model: Any, payload: dict[str, Any]) -> None:
        try:
            model.load_state_dict(payload["model"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise CheckpointError("the checkpoint does not fit this model "
                                  f"({_first_line(exc)})") from None


OFFLINE = TorchOffline()
