"""``python -m hvdtrain.train_launcher.modelcheck REQUEST RESULT``: the launcher's model check.

Building a user's model needs its framework, and the CLI never imports one (``hvdtrain --help``
stays fast, and one process never holds two frameworks). So the launching host runs this
module in a subprocess: it loads the data as a rank would, imports the user's factory and
builds the model through the framework's ``OfflineFramework`` (the same code the adapter
uses), runs it on two samples to see that it takes the data and gives one output per class
(one for binary), and, when resuming, checks that the checkpoint's weights load into it. The
outcome goes to the RESULT file as JSON, so whatever the user's code prints cannot garble it:
``{"ok": true}``, ``{"skipped": why}`` (the framework is not installed on this host), or
``{"error": {"type", "message", "hint"}}``, re-raised by the launcher as the same error.
"""

from __future__ import annotations

import importlib
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hvdtrain import errors
from hvdtrain.atomic import atomic_write_text
from hvdtrain.catalog import FRAMEWORKS
from hvdtrain.config import TrainConfig
from hvdtrain.errors import CheckpointError, ConfigError, HvdtrainError
from hvdtrain.frameworks.models import describe_exception
from hvdtrain.pretrained import ModelSize, parse_pretrained, rank_memory
from hvdtrain.training.checkpoint import check_compatible
from hvdtrain.training.datasets import load_dataset
from hvdtrain.training.text_data import load_text_dataset
from hvdtrain.types import OfflineFramework

PROBE_SAMPLES = 2


def check(config: TrainConfig, checkpoint: Path | None) -> dict[str, Any]:
    offline: OfflineFramework = FRAMEWORKS.load(config.framework, "offline")
    missing = offline.available()
    if missing:
        return {"skipped": missing}
    pretrained = parse_pretrained(config.model)
    if pretrained is not None:
        data = load_text_dataset(config)
    else:
        data = load_dataset(config.data, config.seed, config.val_fraction, config.label_column)
    model = offline.build(config, data)
    sizes: dict[str, Any] = {}
    if pretrained is not None:
        module, _, attr = pretrained.kind.describer.partition(":")
        size: ModelSize = getattr(importlib.import_module(module), attr)(model)
        sizes = {"size": asdict(size), "memory": rank_memory(
            size, config.batch_size, config.max_length, config.precision)}
    try:
        shape = offline.output_shape(model, data.x_train[:PROBE_SAMPLES])
    except Exception as exc:  # the user's forward pass
        raise ConfigError(f"--model {config.model}: the model fails on a batch of "
                          f"{data.name} ({describe_exception(exc)})",
                          hint=f"it gets batches of shape (batch, "
                          f"{', '.join(map(str, data.x_train.shape[1:]))})") from None
    want = (PROBE_SAMPLES, data.num_outputs)
    if shape != want:
        task = ("one logit for its 2 classes" if data.num_classes == 2
                else "one logit per class")
        raise ConfigError(f"--model {config.model}: the model's output has shape {shape} for "
                          f"{PROBE_SAMPLES} samples; {data.name} needs {want}, {task}",
                          hint="use the num_outputs argument the factory is offered")
    if checkpoint is not None:
        payload = offline.read_checkpoint(checkpoint)
        check_compatible(payload, checkpoint, {"framework": config.framework,
                                               "model": config.model, "data": config.data})
        try:
            offline.check_checkpoint_fits(model, payload)
        except CheckpointError as exc:
            raise CheckpointError(f"{checkpoint}: {exc.message}",
                                  hint="the model's code changed since the checkpoint was "
                                  "written; start a fresh --run-dir") from None
    return {"ok": True, **sizes}


def run(request: dict[str, Any]) -> dict[str, Any]:
    config = TrainConfig(**request["config"])
    checkpoint = request.get("checkpoint")
    try:
        return check(config, Path(checkpoint) if checkpoint else None)
    except HvdtrainError as exc:
        return {"error": {"type": type(exc).__name__, "message": exc.message,
                          "hint": exc.hint}}
    except (Exception, SystemExit) as exc:  # user code outside the factory call, say
        return {"error": {"type": "ConfigError", "message": f"--model {config.model}: "
                          f"checking the model failed ({describe_exception(exc)})",
                          "hint": None}}


def error_from(result: dict[str, Any]) -> HvdtrainError:
    """The launcher's side: the error the check reported, as the same class."""
    error = result["error"]
    kind = getattr(errors, str(error.get("type")), ConfigError)
    if not (isinstance(kind, type) and issubclass(kind, HvdtrainError)) or kind in (
            errors.HostfileError, errors.RankFailedError):
        kind = ConfigError
    made: HvdtrainError = kind(str(error["message"]), hint=error.get("hint"))
    return made


if __name__ == "__main__":
    outcome = run(json.loads(Path(sys.argv[1]).read_text()))
    atomic_write_text(Path(sys.argv[2]), json.dumps(outcome))  # killed at the deadline: none
