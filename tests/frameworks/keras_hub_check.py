"""KerasHub presets and the fine-tuning recipe through the TensorFlow adapter, in its own
process; prints JSON results.

``python -m tests.frameworks.keras_hub_check WORK_DIR``: loading ``keras-hub:`` presets (a
saved classifier's head kept, a backbone preset's made fresh), tokenizing (pairs, dynamic
length), freezing, the size for the memory estimate, one-line errors for what cannot load;
then the recipe in the adapter (gradient accumulation and an epoch's remainder, clipping of
the averaged gradient, no weight decay on one-dimensional variables, frozen variables
untouched, bf16 for a preset and a built-in model, fp16 refused on a CPU), and that none of it
imported torch.
``test_keras_hub.py`` asserts the results.
"""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from hvdtrain.config import TrainConfig
from hvdtrain.errors import ConfigError
from hvdtrain.frameworks.registry import create_adapter
from hvdtrain.frameworks.tensorflow import pretrained
from hvdtrain.training.datasets import load_dataset
from hvdtrain.training.text_data import load_text_dataset
from hvdtrain.types import DeviceChoice
from tests.fixtures.language_models import make_keras_bert, reviews, write_reviews
from tests.frameworks.recipe_check import remainder


def error_of(call: Any) -> str:
    try:
        call()
    except ConfigError as exc:
        return exc.message
    return "no error"


def flat(variables: list[Any]) -> np.ndarray:
    return np.concatenate([np.asarray(v).ravel() for v in variables])


def presets(work: Path) -> dict[str, object]:
    task, backbone = make_keras_bert(work / "task"), make_keras_bert(work / "bb", task=False)
    texts = [text for text, _ in reviews(8)]
    name = f"keras-hub:{task}"
    packed = pretrained.encode_texts(name, texts, None, 64)
    pairs = pretrained.encode_texts(name, texts, texts[::-1], 12)
    kept = pretrained.build(name, 2, ["no", "yes"])
    fresh = pretrained.build(f"keras-hub:{backbone}", 2, None)
    three = pretrained.build(name, 3, None)
    frozen = pretrained.build(name, 2, None)
    trainable = len(frozen.trainable_variables)
    frozen_count = pretrained.freeze(frozen, True, 1)
    size = pretrained.describe(frozen)
    bad = work / "bad"
    bad.mkdir()
    for file in ("metadata.json", "tokenizer.json", "model.weights.h5"):
        (bad / file).write_bytes((task / file).read_bytes())
    (bad / "config.json").write_text('{"class_name": "NoSuchBackbone", "config": {}}')
    return {
        "packed": [list(packed.shape), str(packed.dtype)],
        "trimmed": int(packed[:, 1].sum(1).max()) == packed.shape[2],
        "pair_segments": sorted(set(pairs[:, 2].ravel().tolist())),
        "pair_length": pairs.shape[2],
        "head_kept": [kept.task.hvdtrain_head_kept, fresh.task.hvdtrain_head_kept],
        "outputs": [list(kept(packed).shape), list(fresh(packed).shape),
                    list(three(packed).shape)],
        "label_names": kept.label_names,
        "frozen": [frozen_count, size.parameters - size.trainable,
                   trainable - len(frozen.trainable_variables)],
        "size": [size.hidden, size.layers, size.parameters],
        "too_many_layers": error_of(lambda: pretrained.freeze(frozen, False, 3)),
        "too_long": error_of(lambda: pretrained.encode_texts(name, texts, None, 512)),
        "cannot_load": error_of(lambda: pretrained.build(f"keras-hub:{bad}", 2, None)),
    }


def fresh(framework_options: dict[str, Any], data: Any, **options: Any) -> Any:
    """An adapter set up anew (the process was pinned once, in ``main``: TensorFlow's
    threads cannot change after its first op)."""
    adapter = create_adapter("tensorflow")
    adapter.setup(TrainConfig(framework="tensorflow", seed=1, **framework_options, **options),
                  data)
    return adapter


def recipe() -> dict[str, object]:
    """As ``recipe_check.py`` for torch: accumulation, clipping, decay on matrices only."""
    data = load_dataset("breast-cancer", 1, 0.2)
    x, y = data.x_train[:64], data.y_train[:64]
    mlp = {"model": "mlp", "data": "breast-cancer"}
    whole = fresh(mlp, data, optimizer="sgd")
    start = flat(whole.model.trainable_variables)
    whole.train_batch(x, y, 0.1)
    halves = fresh(mlp, data, optimizer="sgd", grad_accumulation=2)
    halves.train_batch(x[:32], y[:32], 0.1)
    after_one_pass = flat(halves.model.trainable_variables)
    halves.train_batch(x[32:], y[32:], 0.1)
    clipped = fresh(mlp, data, optimizer="sgd", clip_grad_norm=0.01)
    clipped.train_batch(x, y, 1.0)
    decayed = fresh(mlp, data, optimizer="adamw", weight_decay=0.5)
    optimizer = decayed.optimizer
    by_rank = sorted({(len(v.shape), bool(optimizer._use_weight_decay(v)))
                      for v in decayed.model.trainable_variables})
    l2 = fresh(mlp, data, optimizer="adam", weight_decay=0.5)
    bf16 = fresh(mlp, data, precision="bf16")
    stats = bf16.train_batch(x, y, 1e-3)
    layer = bf16.model.layers[-1]
    return {
        **remainder(partial(fresh, mlp, data), data.x_train[:96], data.y_train[:96]),
        "mlp_bf16": [layer.dtype_policy.name, str(layer.kernel.dtype),
                     bool(np.isfinite(stats.loss_sum)), not stats.nonfinite],
        "accumulation_waits": bool(np.array_equal(after_one_pass, start)),
        "accumulation_equals_big_batch": float(np.max(np.abs(
            flat(halves.model.trainable_variables) - flat(whole.model.trainable_variables)))),
        "clipped_step_norm": float(np.linalg.norm(flat(clipped.model.trainable_variables)
                                                  - start)),
        "decay_by_rank": by_rank,
        "l2_by_rank": sorted({(len(v.shape), decayed_too) for v, decayed_too in
                              zip(l2.model.trainable_variables, l2.decayed)}),
    }


def fine_tuning(work: Path) -> dict[str, object]:
    """The adapter on the preset: frozen variables stay, the rest learn; bf16; fp16 on a CPU."""
    write_reviews(work / "reviews.csv", n=96)
    options = {"model": f"keras-hub:{work / 'task'}", "data": str(work / "reviews.csv"),
               "text_column": "review", "label_column": "sentiment", "optimizer": "adamw",
               "weight_decay": 0.01, "clip_grad_norm": 1.0}
    config = TrainConfig(framework="tensorflow", **options)  # type: ignore[arg-type]
    data = load_text_dataset(config)
    adapter = fresh(options, data, freeze_embeddings=True, lr=1e-3)
    model = adapter.model
    embeddings = [v for v in model.variables if "embedding" in v.path]
    before_frozen = flat(embeddings)
    before = flat(model.trainable_variables)
    first = adapter.evaluate_batch(data.x_train, data.y_train)
    for _ in range(3):
        for start in range(0, len(data.x_train), 16):
            adapter.train_batch(data.x_train[start:start + 16], data.y_train[start:start + 16],
                                1e-3)
    last = adapter.evaluate_batch(data.x_train, data.y_train)
    bf16 = fresh(options, data, precision="bf16", lr=1e-3)
    stats = bf16.train_batch(data.x_train[:16], data.y_train[:16], 1e-3)
    return {
        "tokens": [list(data.x_train.shape[1:]), str(data.x_train.dtype), data.label_names],
        "frozen_unchanged": bool(np.array_equal(before_frozen, flat(embeddings))),
        "trained_changed": not np.array_equal(before, flat(model.trainable_variables)),
        "loss_decreased": last.loss_sum < first.loss_sum,
        "bf16": [str(bf16.model.task.backbone.dtype_policy.name),
                 str(bf16.model.trainable_variables[0].dtype), bool(np.isfinite(stats.loss_sum)),
                 not stats.nonfinite],
        "fp16_on_cpu": error_of(lambda: fresh(options, data, precision="fp16")),
    }


def main(work: Path) -> dict[str, object]:
    create_adapter("tensorflow").pin(DeviceChoice("cpu", None, "cpu"))
    results = {**presets(work), **recipe(), **fine_tuning(work)}
    results["torch_imported"] = "torch" in sys.modules
    return results


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
