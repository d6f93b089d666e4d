"""Exercise one registered adapter through the FrameworkAdapter seam; print JSON results.

Run as ``python conformance_check.py FRAMEWORK OUT_DIR`` in its own process (one framework per
process); ``test_conformance.py`` runs it for every registered adapter and asserts the same
results for each, so the adapters cannot drift apart.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from hvdtrain.catalog import MODELS, OPTIMIZERS
from hvdtrain.config import TrainConfig
from hvdtrain.errors import CheckpointError
from hvdtrain.frameworks.registry import create_adapter
from hvdtrain.training.checkpoint import FORMAT, check_compatible
from hvdtrain.training.datasets import load_dataset
from hvdtrain.types import DeviceChoice, FrameworkAdapter


def main(framework: str, out: Path) -> dict[str, object]:
    adapter = create_adapter(framework)
    members = [n for n in FrameworkAdapter.__dict__ if not n.startswith("_")]
    members += list(FrameworkAdapter.__annotations__)
    results: dict[str, object] = {"missing": sorted(m for m in set(members)
                                                    if not hasattr(adapter, m))}
    # every name the catalog offers has a builder / an optimizer in this framework
    package = type(adapter).__module__.rsplit(".", 1)[0]
    builders = importlib.import_module(f"{package}.models").BUILDERS
    optimizers = importlib.import_module(type(adapter).__module__).OPTIMIZERS
    results["catalog_covered"] = (set(builders) == set(MODELS.names())
                                  and set(optimizers) == set(OPTIMIZERS.names()))
    adapter.pin(DeviceChoice("cpu", None, "cpu"))
    config = TrainConfig(framework=framework, model="mlp", data="breast-cancer", seed=1)
    data = load_dataset("breast-cancer", 1, 0.2)
    adapter.setup(config, data)
    x, y = data.x_train[:64], data.y_train[:64]
    first = adapter.evaluate_batch(x, y)
    results["eval_count"] = first.count
    start_hash = adapter.parameter_hash()
    results["hash_stable"] = start_hash == adapter.parameter_hash()
    for _ in range(30):
        adapter.train_batch(x, y, 1e-3)
    results["loss_decreased"] = adapter.evaluate_batch(x, y).loss_sum < first.loss_sum
    trained_hash = adapter.parameter_hash()
    results["training_changes_parameters"] = trained_hash != start_hash

    path = out / "ckpt"
    meta = {"format": FORMAT, "epoch": 1, "config": config.as_json(), "rng": None,
            "best_val_loss": 1.0, "epochs_since_best": 0}
    adapter.write_checkpoint(path, meta)
    state = adapter.rng_state()
    adapter.train_batch(x, y, 1e-3)
    results["moved_after_checkpoint"] = adapter.parameter_hash() != trained_hash
    payload = adapter.read_checkpoint(path)
    check_compatible(payload, path, {"framework": framework, "model": "mlp"})
    adapter.apply_checkpoint(payload)
    adapter.set_rng_state(state)
    results["checkpoint_round_trip"] = adapter.parameter_hash() == trained_hash
    results["checkpoint_epoch"] = payload["epoch"]

    garbage = out / "garbage"
    garbage.write_bytes(b"\x00not a checkpoint at all")
    try:
        adapter.read_checkpoint(garbage)
        results["corrupt_rejected"] = False
    except CheckpointError as exc:
        results["corrupt_rejected"] = str(garbage) in exc.message
    try:
        check_compatible(payload, path, {"model": "cnn"})
        results["foreign_rejected"] = False
    except CheckpointError as exc:
        results["foreign_rejected"] = "model='mlp'" in exc.message
    return results


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], Path(sys.argv[2]))))
