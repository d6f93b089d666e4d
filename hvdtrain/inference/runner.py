"""What a rank of ``hvdtrain evaluate`` / ``predict`` does, and the checks made before any
rank starts (``prepare``, the same reading code, run on the launching host).

Batches: batch ``k`` is the ``k``-th run of ``--batch-size`` samples of the input, whatever
the rank count, and rank ``r`` computes batches ``r, r + N, r + 2N, ...`` (on one thread, see
the predictors), so every sample's result is bit for bit the same at any rank count.

* **evaluate**: each rank adds up its samples (loss, confusion matrix) with no collective on
  the way; one allreduce at the end, and for a binary task one gather of the scores (ROC AUC).
  Rank 0 prints the metrics (``--json``: one object).
* **predict**: in round ``j`` every rank computes batch ``j·N + r`` and the results are
  gathered; rank 0 writes them in batch order, so rows come in input order and memory holds
  one round, never the whole input. The file is written under a temporary name beside
  ``--output`` and renamed when complete (``hvdtrain.atomic``). A write that fails there (a
  full disk) travels to the other ranks with the next round's gather, so every rank stops
  with the same one-line ``OutputError`` and no partial file is left.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from hvdtrain.atomic import atomic_write
from hvdtrain.catalog import FRAMEWORKS, PREDICTION_FILES
from hvdtrain.config import TrainConfig
from hvdtrain.errors import ConfigError, DataError, OutputError
from hvdtrain.inference.card import ModelCard, load_card
from hvdtrain.inference.inputs import Batch, Inputs
from hvdtrain.inference.metrics import format_table, summarise
from hvdtrain.launch.protocol import RunLayout
from hvdtrain.log import logger
from hvdtrain.training.commits import raise_agreed
from hvdtrain.training.host_identity import device_choice
from hvdtrain.training.progress import Progress, progress
from hvdtrain.types import Collectives, Dataset, DeviceChoice


class Predictor(Protocol):
    """What a framework provides for evaluate and predict (``catalog.FRAMEWORKS``'
    ``predictor``); both frameworks' classes are checked against it by mypy and a test."""

    name: str

    def connect(self) -> Collectives: ...

    def pin(self, choice: DeviceChoice) -> None: ...

    def load(self, config: TrainConfig, data: Dataset, checkpoint: Path) -> None: ...

    def run(self, x: np.ndarray, y: np.ndarray | None
            ) -> tuple[np.ndarray, np.ndarray, float | None]: ...


@dataclass(frozen=True)
class Request:
    command: str  # evaluate | predict
    checkpoint: str
    data: str
    split: str = "auto"
    label_column: str | None = None
    batch_size: int = 1024
    output: str | None = None  # predict
    json: bool = False  # evaluate


def check_output(output: str) -> Path:
    path = Path(output)
    PREDICTION_FILES.get(path.suffix)
    if not path.parent.is_dir():
        raise ConfigError(f"--output {output}: directory {path.parent} does not exist")
    if path.is_dir():
        raise ConfigError(f"--output {output} is a directory; give a .csv or .jsonl file name")
    return path


def prepare(request: Request) -> tuple[ModelCard, int]:
    """Everything the launching host can check, before any rank starts: the checkpoint is
    complete and carries the data's shape, the data fits it (kind, features, finite values,
    labels within the trained classes), the output can be written. Returns the card and the
    number of samples."""
    if request.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {request.batch_size}")
    card = load_card(request.checkpoint)
    if request.command == "predict":
        check_output(request.output or "")
    inputs = Inputs(card, request.data, request.split, request.label_column,
                    labels=request.command == "evaluate")
    return card, inputs.check()


def _my_batches(inputs: Inputs, size: int, rank: int, world: int) -> Iterator[Batch]:
    for batch in inputs.batches(size, want=lambda k: k % world == rank):
        if batch is not None:
            yield batch


def _progress(comm: Collectives, what: str, unit: str) -> Progress | None:
    """Rank 0's: a bar on a terminal, a plain line every 30 s in a log (``training.progress``)."""
    return progress(what, None, unit) if comm.rank == 0 else None


def evaluate(predictor: Predictor, comm: Collectives, card: ModelCard,
             inputs: Inputs, batch_size: int) -> dict[str, Any]:
    classes = card.num_classes
    confusion = np.zeros((classes, classes), dtype=np.float64)
    loss_sum = 0.0
    scores: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    bar = _progress(comm, "evaluate (rank 0)", "batch")
    for batch in _my_batches(inputs, batch_size, comm.rank, comm.size):
        assert batch.y is not None  # Inputs(labels=True)
        probabilities, predicted, loss = predictor.run(batch.x, batch.y)
        loss_sum += float(loss or 0.0)
        np.add.at(confusion, (batch.y, predicted), 1)
        if classes == 2:
            scores.append(probabilities[:, 1])
            labels.append(batch.y)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    local = np.concatenate([[loss_sum], confusion.ravel()])
    total = comm.allreduce_sum(local, name="evaluate.sums")
    gathered = comm.allgather_object(
        (np.concatenate(scores) if scores else np.zeros(0, np.float32),
         np.concatenate(labels) if labels else np.zeros(0, np.int64))) if classes == 2 else []
    all_scores = np.concatenate([s for s, _ in gathered]) if gathered else None
    all_labels = np.concatenate([y for _, y in gathered]) if gathered else None
    return summarise(float(total[0]), total[1:].reshape(classes, classes), card.class_names,
                     all_scores, all_labels)


def _number(value: np.float32) -> str:
    return str(value)  # the shortest text that reads back as the same float32


class _Rows:
    """Writes prediction rows as CSV or JSONL (``catalog.PREDICTION_FILES``)."""

    def __init__(self, handle: IO[str], suffix: str, class_names: tuple[str, ...]) -> None:
        self.handle, self.jsonl, self.names = handle, suffix == ".jsonl", class_names
        self.keys = [f"prob_{name}" for name in class_names]
        if not self.jsonl:
            handle.write(",".join(["index", "prediction", *(_csv(k) for k in self.keys)]) + "\n")

    def write(self, index: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray) -> None:
        lines = []
        for i, cls, row in zip(index, predicted, probabilities, strict=True):
            values = [_number(v) for v in row.astype(np.float32)]
            if self.jsonl:
                fields = ", ".join(f"{json.dumps(k)}: {v}" for k, v in zip(self.keys, values,
                                                                          strict=True))
                lines.append(f'{{"index": {int(i)}, "prediction": '
                             f'{json.dumps(self.names[int(cls)])}, {fields}}}\n')
            else:
                lines.append(",".join([str(int(i)), _csv(self.names[int(cls)]), *values]) + "\n")
        self.handle.write("".join(lines))


def _csv(text: str) -> str:
    return f'"{text.replace(chr(34), chr(34) * 2)}"' if any(c in text for c in ',"\n') else text


def predict(predictor: Predictor, comm: Collectives, card: ModelCard, inputs: Inputs,
            batch_size: int, output: Path) -> int:
    """Returns the number of rows written (on every rank)."""
    mine = _my_batches(inputs, batch_size, comm.rank, comm.size)
    bar = _progress(comm, "predict", "sample")

    classes = card.num_classes

    failed: list[OSError] = []  # rank 0: the write that failed; the next round ends them all

    def rounds(rows: _Rows | None) -> int:
        written = 0
        while True:
            batch = next(mine, None) if not failed else None
            # the same type from every rank, also past the end: Horovod names an object
            # gather by its type, and ranks gathering different names wait for each other
            result: tuple[np.ndarray, np.ndarray, np.ndarray] = (
                np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, classes), np.float32))
            if batch is not None:
                probabilities, predicted, _ = predictor.run(batch.x, None)
                result = (batch.index, predicted, probabilities)
            gathered = comm.allgather_object((result, bool(failed)))
            if any(stop for _, stop in gathered) or all(
                    len(index) == 0 for (index, _, _), _ in gathered):
                return written
            for item, _ in gathered:  # rank order = batch order within the round
                if rows is not None:
                    try:
                        rows.write(*item)
                    except OSError as exc:  # a full disk: stop writing, tell the others
                        failed.append(exc)
                        rows = None
                written += len(item[0])
                if bar is not None and len(item[0]):
                    bar.update(len(item[0]))

    if comm.rank != 0:
        count = rounds(None)
        # rank 0's outcome; the same type from every rank (Horovod names it by its type)
        (error,) = comm.broadcast_object((None,))
        if error is not None:
            raise_agreed(comm, OutputError(*error))
        return count
    count = 0

    def write(tmp: Path) -> None:
        nonlocal count
        with tmp.open("w", encoding="utf-8", newline="") as handle:
            count = rounds(_Rows(handle, output.suffix, card.class_names))
        if failed:
            raise failed[0]

    outcome = None
    try:
        atomic_write(output, write)
    except OutputError as exc:  # every rank is past its gathers: tell them, then raise
        outcome = (exc.message, exc.hint)
    finally:
        if bar is not None:
            bar.close()
    comm.broadcast_object((outcome,))
    if outcome is not None:
        raise OutputError(*outcome)
    return count


def run_rank(request: Request, env: Mapping[str, str] | None = None) -> None:
    """The rank side of ``evaluate``/``predict`` (started by hvdtrain, horovodrun or mpirun)."""
    env = os.environ if env is None else env
    layout = RunLayout.from_env(env)
    card = load_card(request.checkpoint)
    predictor: Predictor = FRAMEWORKS.load(card.framework, "predictor")()
    comm = predictor.connect()
    if layout is not None:
        layout.write_ready(comm.rank)
    choice = device_choice(comm.rank, comm.local_rank, env)
    predictor.pin(choice)
    predictor.load(card.config, card.stub(), card.path)
    inputs = Inputs(card, request.data, request.split, request.label_column,
                    labels=request.command == "evaluate")
    if request.command == "evaluate":
        result = evaluate(predictor, comm, card, inputs, request.batch_size)
        if comm.rank == 0:
            result = {**result, "checkpoint": str(card.path), "data": request.data,
                      "split": inputs.split, "ranks": comm.size}
            print(json.dumps(result) if request.json else
                  f"{card.describe()}\n{request.data} ({inputs.split}) on {comm.size} "
                  f"rank(s)\n{format_table(result)}", flush=True)
        return
    output = check_output(request.output or "")
    rows = predict(predictor, comm, card, inputs, request.batch_size, output)
    if rows == 0:
        raise DataError(f"{request.data}: no samples to predict")
    if comm.rank == 0:
        logger.info("%s predictions of %s on %d rank(s) written to %s", rows, card.describe(),
                    comm.size, output)
