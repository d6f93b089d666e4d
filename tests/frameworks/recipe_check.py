"""The fine-tuning recipe through one adapter, in its own process; prints JSON results.

``python recipe_check.py FRAMEWORK``: gradient accumulation (2 passes at batch B against one
at 2B), clipping of the averaged gradient (the first SGD step moves the parameters by exactly
lr × the clipped norm), and no weight decay on one-dimensional tensors. ``test_recipe.py``
asserts the results for every framework.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from hvdtrain.config import TrainConfig
from hvdtrain.frameworks.registry import create_adapter
from hvdtrain.training.datasets import load_dataset
from hvdtrain.types import DeviceChoice


def parameters(adapter: object) -> np.ndarray:
    model = adapter.model  # type: ignore[attr-defined]
    if hasattr(model, "parameters"):
        return np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])
    return np.concatenate([np.asarray(v).ravel() for v in model.trainable_variables])


def main(framework: str) -> dict[str, object]:
    data = load_dataset("breast-cancer", 1, 0.2)
    x, y = data.x_train[:64], data.y_train[:64]

    def fresh(**options: object) -> object:
        adapter = create_adapter(framework)
        adapter.pin(DeviceChoice("cpu", None, "cpu"))
        adapter.setup(TrainConfig(framework=framework, model="mlp", data="breast-cancer",
                                  seed=1, **options), data)  # type: ignore[arg-type]
        return adapter

    whole = fresh(optimizer="sgd")
    start = parameters(whole)
    whole.train_batch(x, y, 0.1)  # type: ignore[attr-defined]
    halves = fresh(optimizer="sgd", grad_accumulation=2)
    halves.train_batch(x[:32], y[:32], 0.1)  # type: ignore[attr-defined]
    after_one_pass = parameters(halves)
    halves.train_batch(x[32:], y[32:], 0.1)  # type: ignore[attr-defined]
    results: dict[str, object] = {
        "accumulation_waits": bool(np.array_equal(after_one_pass, start)),
        "accumulation_equals_big_batch": float(np.max(np.abs(parameters(halves)
                                                             - parameters(whole)))),
    }
    clipped = fresh(optimizer="sgd", clip_grad_norm=0.01)
    clipped.train_batch(x, y, 1.0)  # type: ignore[attr-defined]
    results["clipped_step_norm"] = float(np.linalg.norm(parameters(clipped) - start))
    decayed = fresh(optimizer="adamw", weight_decay=0.5)
    groups = decayed.optimizer.param_groups  # type: ignore[attr-defined]
    results["decay_by_rank"] = sorted({(int(p.ndim), float(g["weight_decay"]))
                                       for g in groups for p in g["params"]})
    return results


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
