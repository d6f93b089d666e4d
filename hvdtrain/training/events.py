"""What rank 0 shows and records: progress (``training.progress``: a bar on a terminal, plain
lines in a log), metrics JSONL, TensorBoard event files.

TensorBoard events are written with the ``tensorboard`` package's own event writer (no
framework import), so a TensorFlow rank does not pull in torch and vice versa.
"""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path
from typing import Any

from hvdtrain.training.progress import DEFAULT_EVERY_SECONDS, Progress, progress


def _keep_tensorflow_out() -> None:
    """TensorBoard imports TensorFlow when it can, unless ``tensorboard.compat.notf`` exists
    (its documented switch to the built-in stub). A torch rank must not load TensorFlow."""
    if "tensorflow" not in sys.modules:
        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("notf"))


class TensorBoardWriter:
    def __init__(self, directory: Path) -> None:
        _keep_tensorflow_out()
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        directory.mkdir(parents=True, exist_ok=True)
        self._writer = EventFileWriter(str(directory))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        summary = Summary(value=[Summary.Value(tag=k, simple_value=float(v))
                                 for k, v in values.items()])
        self._writer.add_event(Event(wall_time=time.time(), step=step, summary=summary))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class ChiefRecorder:
    """Rank 0's outputs. Other ranks get ``None`` and record nothing."""

    def __init__(self, run_dir: Path, total_epochs: int,
                 log_every_seconds: float = DEFAULT_EVERY_SECONDS) -> None:
        self.run_dir = run_dir
        self.total_epochs = total_epochs
        self.log_every_seconds = log_every_seconds
        self.metrics = run_dir / "metrics.jsonl"
        self.tensorboard = TensorBoardWriter(run_dir / "tensorboard")

    def progress(self, epoch: int, steps: int) -> Progress:
        return progress(f"epoch {epoch}/{self.total_epochs}", steps, "step",
                        self.log_every_seconds)

    def epoch_done(self, metrics: dict[str, Any]) -> None:
        with self.metrics.open("a") as out:
            out.write(json.dumps(metrics) + "\n")
        self.tensorboard.scalars(int(metrics["epoch"]), {
            k: v for k, v in metrics.items()
            if k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                     "samples_per_second", "fp16_recoveries", "nonfinite_skips")})
        skips = int(metrics.get("nonfinite_skips", 0))
        print(f"epoch {metrics['epoch']}/{self.total_epochs}  loss {metrics['train_loss']:.4f}"
              f"  acc {metrics['train_accuracy']:.4f}  val_loss {metrics['val_loss']:.4f}"
              f"  val_acc {metrics['val_accuracy']:.4f}  lr {metrics['lr']:.2e}"
              f"  {metrics['samples_per_second']:,.0f} samples/s"
              + (f"  skipped {skips} non-finite steps" if skips else ""), flush=True)

    def close(self) -> None:
        self.tensorboard.close()
