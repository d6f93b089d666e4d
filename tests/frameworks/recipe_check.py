"""The fine-tuning recipe through one adapter, in its own process; prints JSON results.

``python recipe_check.py FRAMEWORK``: gradient accumulation (2 passes at batch B against one
at 2B; an epoch's remainder of 1 pass stepped on alone at its end), clipping of the averaged
gradient (the first SGD step moves the parameters by exactly lr × the clipped norm), and
(torch) no weight decay on one-dimensional tensors. ``test_recipe.py`` asserts the results for
every framework.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

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
    results.update(remainder(fresh, data.x_train[:96], data.y_train[:96]))
    clipped = fresh(optimizer="sgd", clip_grad_norm=0.01)
    clipped.train_batch(x, y, 1.0)  # type: ignore[attr-defined]
    results["clipped_step_norm"] = float(np.linalg.norm(parameters(clipped) - start))
    if framework != "torch":
        return results
    decayed = fresh(optimizer="adamw", weight_decay=0.5)
    groups = decayed.optimizer.param_groups  # type: ignore[attr-defined]
    results["decay_by_rank"] = sorted({(int(p.ndim), float(g["weight_decay"]))
                                       for g in groups for p in g["params"]})
    return results


def remainder(fresh: Callable[..., Any], x: np.ndarray, y: np.ndarray) -> dict[str, object]:
    """An epoch of 3 micro-batches of 32 at --grad-accumulation 2: a step on the first two,
    then the epoch's end steps on the third alone, as one step at batch 64 and one at 32."""
    reference = fresh(optimizer="sgd")
    reference.train_batch(x[:64], y[:64], 0.1)
    reference.train_batch(x[64:], y[64:], 0.1)
    accumulated = fresh(optimizer="sgd", grad_accumulation=2)
    nothing_pending = accumulated.finish_accumulation()
    for lo in (0, 32, 64):
        accumulated.train_batch(x[lo:lo + 32], y[lo:lo + 32], 0.1)
    nonfinite = accumulated.finish_accumulation()
    flushed = parameters(accumulated)
    accumulated.train_batch(x[:32], y[:32], 0.1)  # the next epoch's first pass waits again
    # a non-finite remainder is not applied (the loop then stops or skips, --on-nonfinite)
    poisoned = fresh(optimizer="sgd", grad_accumulation=2)
    start = parameters(poisoned)
    bad = x[:32].copy()
    bad[0, 0] = np.nan
    poisoned.train_batch(bad, y[:32], 0.1)
    return {"remainder_nothing_pending": nothing_pending,
            "remainder_nonfinite": nonfinite,
            "remainder_equals_two_steps": float(np.max(np.abs(flushed - parameters(reference)))),
            "remainder_then_waits": bool(np.array_equal(parameters(accumulated), flushed)),
            "nonfinite_remainder": [poisoned.finish_accumulation(),
                                    bool(np.array_equal(parameters(poisoned), start))]}


def assert_remainder_stepped(results: dict[str, object]) -> None:
    """``remainder``'s results, for each framework's test."""
    assert results["remainder_nothing_pending"] is None
    assert results["remainder_nonfinite"] is False
    assert results["remainder_equals_two_steps"] < 1e-6  # type: ignore[operator]
    assert results["remainder_then_waits"] is True  # the flush ended that accumulation
    assert results["nonfinite_remainder"] == [True, True]  # reported, and not applied


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
