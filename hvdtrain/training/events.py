"""What rank 0 shows and records: progress (``training.progress``: a bar on a terminal, plain
lines in a log), metrics JSONL, TensorBoard event files.

TensorBoard events go through a supported writer, and never through a framework the rank did
not load: a TensorFlow rank writes with ``tf.summary``; any other (a torch rank, a test's
framework-free run) with ``tensorboardX.SummaryWriter``, which imports torch when it is
installed, so a TensorFlow rank must not use it. (``torch.utils.tensorboard`` is no choice for
torch either: it imports TensorFlow through ``tensorboard`` when that is installed.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Protocol

from hvdtrain.log import logger
from hvdtrain.training.progress import DEFAULT_EVERY_SECONDS, Progress, progress


class ScalarWriter(Protocol):
    def scalars(self, step: int, values: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class TensorBoardXWriter:
    """``tensorboardX.SummaryWriter``: no TensorFlow (torch when installed)."""

    def __init__(self, directory: Path) -> None:
        from tensorboardX import SummaryWriter

        # its writer thread writes events as they come and flushes every flush_secs: an
        # epoch's scalars are on disk within a second (not 2 minutes), should the run be killed
        self._writer = SummaryWriter(str(directory), flush_secs=1)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self._writer.add_scalar(tag, float(value), step)

    def close(self) -> None:
        try:
            self._writer.close()
        except OSError:
            # a full disk: stop its writer threads and mark them closed, so that neither they
            # nor tensorboardX's own exit hook try the same flush again (each would print a
            # traceback over the one-line error the run ends with)
            for file_writer in (self._writer.all_writers or {}).values():
                events = file_writer.event_writer
                if getattr(events, "_worker", None) is not None:
                    events._worker.stop()
                events._closed = True
            raise


class TensorFlowWriter:
    """``tf.summary``, for a rank that runs TensorFlow anyway."""

    def __init__(self, directory: Path) -> None:
        import tensorflow as tf

        self._tf = tf
        self._writer = tf.summary.create_file_writer(str(directory))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        with self._writer.as_default(step=step):
            for tag, value in values.items():
                self._tf.summary.scalar(tag, float(value))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def tensorboard_writer(directory: Path, framework: str | None = None) -> ScalarWriter:
    """The event writer for a rank of ``framework`` (None: whichever of torch and TensorFlow
    this process has loaded; tensorboardX when neither or both)."""
    if framework is None and "tensorflow" in sys.modules and "torch" not in sys.modules:
        framework = "tensorflow"
    directory.mkdir(parents=True, exist_ok=True)
    if framework == "tensorflow":
        return TensorFlowWriter(directory)
    return TensorBoardXWriter(directory)


class ChiefRecorder:
    """Rank 0's outputs. Other ranks get ``None`` and record nothing."""

    def __init__(self, run_dir: Path, total_epochs: int,
                 log_every_seconds: float = DEFAULT_EVERY_SECONDS,
                 framework: str | None = None) -> None:
        self.run_dir = run_dir
        self.total_epochs = total_epochs
        self.log_every_seconds = log_every_seconds
        self.metrics = run_dir / "metrics.jsonl"
        self.tensorboard = tensorboard_writer(run_dir / "tensorboard", framework)
        self._bar: Progress | None = None

    def progress(self, epoch: int, steps: int) -> Progress:
        """The epoch's bar (or log lines), open until ``end_progress`` or ``close``."""
        self._bar = progress(f"epoch {epoch}/{self.total_epochs}", steps, "step",
                             self.log_every_seconds)
        return self._bar

    def end_progress(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

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
        """At the run's end, however it ends: a bar still open (stopped within an epoch),
        then the event file. Its last flush may fail on a full disk: said as a warning, never
        raised, since it would hide the error the run is ending with (the checkpoint write that
        met the full disk says so with its own exit code) and metrics.jsonl holds the same."""
        self.end_progress()
        try:
            self.tensorboard.close()
        except OSError as exc:
            logger.warning("TensorBoard events not completed (%s)", exc.strerror or exc)
