"""The framework-free training loop: epochs, sharded steps, reduced metrics, summary.

It sees only the ``FrameworkAdapter`` seam and a ``Comm``. Metrics are reduced as *sums*
(loss, correct, count) with one allreduce per epoch and split, so the averages are exact
over all samples, and validation on shards equals a single-process evaluation of the set.
Only rank 0 writes files and prints.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hvdtrain.comm import Comm
from hvdtrain.frameworks.base import BatchStats, FrameworkAdapter
from hvdtrain.training.config import TrainConfig
from hvdtrain.training.data import Dataset, eval_shard, shard_batches

EVAL_BATCH = 1024


@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    samples_per_second: float
    fp16_recoveries: int = 0
    step_losses: list[float] = field(default_factory=list)


def _reduce(comm: Comm, stats: list[BatchStats], name: str) -> tuple[float, float, int]:
    local = np.array([sum(s.loss_sum for s in stats), sum(s.correct for s in stats),
                      sum(s.count for s in stats)], dtype=np.float64)
    total = comm.allreduce_sum(local, name=name)
    count = int(total[2])
    return float(total[0] / count), float(total[1] / count), count


def evaluate(adapter: FrameworkAdapter, comm: Comm, x: np.ndarray, y: np.ndarray,
             name: str) -> tuple[float, float]:
    idx = eval_shard(len(x), comm.rank, comm.size)
    stats = [adapter.evaluate_batch(x[idx[i:i + EVAL_BATCH]], y[idx[i:i + EVAL_BATCH]])
             for i in range(0, len(idx), EVAL_BATCH)]
    loss, accuracy, _ = _reduce(comm, stats, name)
    return loss, accuracy


def train(adapter: FrameworkAdapter, comm: Comm, config: TrainConfig, data: Dataset,
          run_dir: Path, record_step_losses: bool = False) -> dict[str, Any]:
    started = time.monotonic()
    is_chief = comm.rank == 0
    metrics_file = run_dir / "metrics.jsonl"
    history: list[EpochMetrics] = []
    n = len(data.x_train)
    for epoch in range(config.epochs):
        batches = shard_batches(n, comm.rank, comm.size, config.batch_size, config.seed + epoch)
        epoch_start = time.monotonic()
        stats: list[BatchStats] = []
        step_losses: list[float] = []
        lr = config.lr_at(epoch, comm.size)
        for step, idx in enumerate(batches):
            lr = config.lr_at(epoch + step / len(batches), comm.size)
            batch = adapter.train_batch(data.x_train[idx], data.y_train[idx], lr)
            stats.append(batch)
            if record_step_losses:
                total = comm.allreduce_sum(np.array([batch.loss_sum, batch.count]),
                                           name=f"step.{epoch}.{step}")
                step_losses.append(float(total[0] / total[1]))
        train_loss, train_acc, seen = _reduce(comm, stats, f"train.{epoch}")
        val_loss, val_acc = evaluate(adapter, comm, data.x_val, data.y_val, f"val.{epoch}")
        recoveries = int(getattr(adapter, "fp16_recoveries", 0))
        m = EpochMetrics(epoch + 1, train_loss, train_acc, val_loss, val_acc, lr,
                         seen / max(time.monotonic() - epoch_start, 1e-9), recoveries,
                         step_losses)
        history.append(m)
        if is_chief:
            with metrics_file.open("a") as out:
                out.write(json.dumps(m.__dict__) + "\n")
            print(f"epoch {m.epoch}/{config.epochs}  loss {train_loss:.4f}  acc {train_acc:.4f}"
                  f"  val_loss {val_loss:.4f}  val_acc {val_acc:.4f}  lr {lr:.2e}"
                  f"  {m.samples_per_second:,.0f} samples/s", flush=True)

    hashes = comm.allgather_object(adapter.parameter_hash())
    last = history[-1]
    summary: dict[str, Any] = {
        "framework": config.framework, "world_size": comm.size, "epochs_run": len(history),
        "compression": config.compression, "model": config.model, "data": config.data,
        "train_loss": last.train_loss, "train_accuracy": last.train_accuracy,
        "val_loss": last.val_loss, "val_accuracy": last.val_accuracy,
        "fp16_recoveries": last.fp16_recoveries,
        "wall_seconds": time.monotonic() - started,
        "parameter_hashes": hashes, "parameters_identical": len(set(hashes)) == 1,
        "config": config.as_json(),
    }
    if record_step_losses:
        summary["step_losses"] = [loss for m in history for loss in m.step_losses]
    if is_chief:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"done: {len(history)} epochs on {comm.size} ranks, val_acc "
              f"{last.val_accuracy:.4f}, parameters identical on all ranks: "
              f"{summary['parameters_identical']}", flush=True)
    return summary
