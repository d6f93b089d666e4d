"""The framework-free training loop: epochs, sharded steps, reduced metrics, early stopping,
checkpoints and resume.

It sees only the ``FrameworkAdapter`` seam and ``Collectives`` (both in ``hvdtrain.types``).
Metrics are reduced as *sums* (loss, correct, count) with one allreduce and then divided, so
averages are exact over all samples and sharded validation equals a single-process evaluation
of the whole set. Decisions that must agree (stop early or not, resume state) are broadcast
from rank 0. Only rank 0 writes files and prints.

**Non-finite steps** cost no extra collective: a rank whose loss is NaN/inf poisons its own
gradient, the gradient allreduce carries that to every rank, and the adapter reports (and never
applies) a step whose averaged gradient is not finite: ``BatchStats.nonfinite``, identical on
every rank. ``--on-nonfinite stop`` then raises ``TrainingDivergedError`` on every rank at that
step (one small allreduce, only then, names NaN or inf); ``skip`` counts it and goes on. A
non-finite validation loss, or parameters, end the run before a checkpoint is written, so the
newest checkpoint is always a good one.

**Gradient accumulation at an epoch's end.** When ``--grad-accumulation`` does not divide the
epoch's batches (the same count on every rank), the epoch's end steps on the passes left over
(``finish_accumulation``, their mean, as the HF Trainer does): an epoch-end checkpoint or
commit cannot hold a half-accumulated gradient, so none crosses it. The lr schedule counts
``ceil(batches / N)`` optimizer steps an epoch and holds one lr over a step's passes.

**Mid-epoch checkpoints and a changing world size.** A step checkpoint (``--checkpoint-every-
steps``, or when the job is asked to stop) records the epoch's *sampler position*: the set of
samples already trained on, as a mask over the training set (``sharding.consumed_after``).
Resuming shards only the rest, over whatever world size the job now has, so no sample of the
interrupted epoch is skipped or repeated, and the lr follows the new size (``lr_at``).

**Stopping on request.** SIGUSR1 or SIGTERM (Slurm's preemption and time-limit warnings,
``scancel --signal``, a pod's termination) sets ``StopRequest`` in the rank that got it. Every
``STOP_CHECK_STEPS`` steps the ranks agree on it with one tiny allreduce, so all stop after the
same step; rank 0 writes a step checkpoint and every rank raises ``TrainingStoppedError``
(exit 75) only once that file is complete.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from hvdtrain import __version__
from hvdtrain.atomic import atomic_write_text, write_failure
from hvdtrain.config import TrainConfig
from hvdtrain.errors import (
    CheckpointError,
    HvdtrainError,
    OutputError,
    TrainingDivergedError,
    TrainingStoppedError,
)
from hvdtrain.launch.protocol import JOB_DIR_ENV
from hvdtrain.log import logger
from hvdtrain.training.checkpoint import (
    FORMAT,
    CheckpointStore,
    check_compatible,
    refuse_to_overwrite,
)
from hvdtrain.training.commits import (
    STOP_CHECK_STEPS,
    SampleLog,
    StopRequest,
    agree_to_stop,
    raise_agreed,
)
from hvdtrain.training.events import ChiefRecorder
from hvdtrain.training.sharding import (
    batch_count,
    consumed_after,
    decode_mask,
    encode_mask,
    eval_shard,
    shard_batches,
)
from hvdtrain.types import BatchStats, Collectives, Dataset, FrameworkAdapter

EVAL_BATCH = 1024
T = TypeVar("T")


@dataclass
class LoopOptions:
    """What the worker adds to a run beyond ``TrainConfig``: a stop request to honour, and
    test and diagnosis records (all off by default)."""

    stop: StopRequest = field(default_factory=StopRequest)
    record_step_losses: bool = False  # the summary gets every step's mean loss
    # rank 0 appends the training-set indices each commit point holds (a checkpoint, an elastic
    # commit, the final model) to samples/committed.jsonl, for exactly-once checks
    record_samples: bool = False
    step_delay: float = 0.0  # seconds of sleep per step: a slow job for fault-tolerance demos
    # Horovod elastic (``training.elastic_loop``): start from an in-memory position instead of a
    # checkpoint (the adapter's state is already restored), and hand every ``commit_every``-th
    # step boundary (and every epoch's end) to ``on_commit`` on every rank, which may raise
    # Horovod's interrupt when hosts changed.
    start: Progress | None = None
    commit_every: int = 0
    on_commit: Callable[[Progress], None] | None = None


@dataclass
class Progress:
    epoch: int = 0  # epochs completed
    best_val_loss: float = math.inf
    epochs_since_best: int = 0
    consumed: np.ndarray | None = None  # samples of epoch ``epoch`` already trained (resumed)
    resumes: list[dict[str, Any]] = field(default_factory=list)


def _reduce(comm: Collectives, stats: list[BatchStats], name: str) -> tuple[float, float, int]:
    local = np.array([sum(s.loss_sum for s in stats), sum(s.correct for s in stats),
                      sum(s.count for s in stats)], dtype=np.float64)
    total = comm.allreduce_sum(local, name=name)
    count = int(total[2])
    if count == 0:
        return math.nan, math.nan, 0
    return float(total[0] / count), float(total[1] / count), count


def step_progress(epoch: int, update: int, updates: int, done_before: int, n: int) -> float:
    """Epochs done when optimizer step ``update`` (of this run of the epoch's ``updates``)
    starts: the lr schedule's position, one for all passes of an accumulation, as
    transformers' scheduler steps once per optimizer step. A resumed epoch counts the
    ``done_before`` of its ``n`` samples trained before the checkpoint."""
    return epoch + (done_before + (n - done_before) * update / max(updates, 1)) / n


def _hint(config: TrainConfig, comm: Collectives, run_dir: Path) -> str:
    fixes = [f"lower --lr (now {config.lr:g}, {config.scaled_lr(comm.size):g} after scaling)",
             "check the data"]
    if config.compression != "none":
        fixes.append("try --compression none")
    if config.on_nonfinite == "stop":
        fixes.append("or skip such steps with --on-nonfinite skip")
    hint = ", ".join(fixes)
    if CheckpointStore(run_dir / "checkpoints").files():
        hint += f"; the newest checkpoint is a good one: --resume latest --run-dir {run_dir}"
    return hint


def _diverged_at_step(comm: Collectives, config: TrainConfig, run_dir: Path, batch: BatchStats,
                      epoch: int, step: int, steps: int) -> TrainingDivergedError:
    """The error every rank raises at the step whose synchronised gradient was not finite
    (every rank got there: the flag is identical on all). One collective, only now, to say
    whether the loss itself was NaN, infinite, or finite with a non-finite gradient."""
    loss = batch.loss_sum
    local = np.array([math.isnan(loss), math.isinf(loss),
                      loss if math.isfinite(loss) else 0.0, batch.count], dtype=np.float64)
    nans, infs, total, count = comm.allreduce_sum(local, name=f"nonfinite.{epoch}.{step}")
    where = f"at epoch {epoch + 1} step {step + 1} (of {steps})"
    if nans or infs:
        what = f"loss became {'NaN' if nans else 'inf'} {where}"
    else:
        what = f"gradient became NaN/inf {where} (loss {total / max(count, 1):.4g})"
    return TrainingDivergedError(f"{what}; stopped every rank there, that step was not applied",
                                 hint=_hint(config, comm, run_dir))


def evaluate(adapter: FrameworkAdapter, comm: Collectives, x: np.ndarray, y: np.ndarray,
             name: str) -> tuple[float, float]:
    """Loss and accuracy of the whole set, each rank evaluating a disjoint shard."""
    idx = eval_shard(len(x), comm.rank, comm.size)
    stats = [adapter.evaluate_batch(x[idx[i:i + EVAL_BATCH]], y[idx[i:i + EVAL_BATCH]])
             for i in range(0, len(idx), EVAL_BATCH)]
    loss, accuracy, _ = _reduce(comm, stats, name)
    return loss, accuracy


def on_chief(comm: Collectives, action: Callable[[], T]) -> T:
    """Run ``action`` on rank 0 and broadcast its result; an error there is raised on every
    rank (so no rank waits forever in the next collective)."""
    result, error = None, None
    if comm.rank == 0:
        try:
            result = action()
        except HvdtrainError as exc:
            error = (exc.message, exc.hint)
    error, result = comm.broadcast_object((error, result))
    if error is not None:
        raise_agreed(comm, CheckpointError(*error))
    return result


def _write_run_file(run_dir: Path, name: str, text: str) -> None:
    try:
        atomic_write_text(run_dir / name, text)
    except OutputError as exc:
        raise CheckpointStore(run_dir / "checkpoints").write_failed(exc) from None


def _record_epoch(chief: ChiefRecorder | None, store: CheckpointStore,
                  metrics: dict[str, Any]) -> tuple[str, str | None] | None:
    """Rank 0 records the epoch (metrics.jsonl, TensorBoard); a write that fails there (a
    full disk) is returned as (message, hint), for every rank to raise, never a traceback."""
    if chief is None:
        return None
    try:
        chief.epoch_done(metrics)
    except OSError as exc:
        where = Path(exc.filename) if exc.filename else chief.metrics
        error = write_failure(exc, where)
        if error is None:
            raise
        failed = store.write_failed(error)
        return failed.message, failed.hint
    return None


def resume_progress(adapter: FrameworkAdapter, comm: Collectives, config: TrainConfig,
            store: CheckpointStore, n_train: int) -> Progress:
    """Rank 0 reads and checks the checkpoint; state and progress are broadcast from it.
    ``--resume auto`` with no checkpoint yet is a fresh start."""

    def load_on_chief() -> dict[str, Any] | None:
        path = store.resolve(config.resume or "latest")
        if path is None:
            logger.info("--resume auto: no checkpoint yet, starting afresh")
            return None
        payload = adapter.read_checkpoint(path)
        check_compatible(payload, path, {"framework": config.framework,
                                         "model": config.model, "data": config.data})
        sampler = payload.get("sampler")
        if sampler and int(sampler["n"]) != n_train:
            raise CheckpointError(f"{path}: written mid-epoch with {sampler['n']} training "
                                  f"samples, this data set has {n_train}",
                                  hint="resume with the same data (and --val-fraction/--seed)")
        adapter.apply_checkpoint(payload)
        into = (f", {sampler['samples']} samples into epoch {payload['epoch'] + 1}"
                if sampler else "")
        logger.info("resuming from %s (epoch %s%s)", path, payload["epoch"], into)
        meta = {k: payload.get(k) for k in ("epoch", "best_val_loss", "epochs_since_best", "rng",
                                            "sampler", "resumes", "world_size")}
        meta["path"] = str(path)
        return meta

    meta = on_chief(comm, load_on_chief)
    if meta is None:
        return Progress()
    adapter.broadcast_state()
    rng = meta["rng"]
    if isinstance(rng, list) and len(rng) == comm.size:
        adapter.set_rng_state(rng[comm.rank])
    sampler = meta["sampler"]
    consumed = decode_mask(sampler["mask"], n_train) if sampler else None
    resumes = [*(meta["resumes"] or []), {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "checkpoint": meta["path"],
        "epoch": int(meta["epoch"]), "samples_into_epoch": int(sampler["samples"]) if sampler
        else 0, "from_world_size": meta["world_size"], "to_world_size": comm.size}]
    return Progress(int(meta["epoch"]), float(meta["best_val_loss"]),
                    int(meta["epochs_since_best"]), consumed, resumes)


def _check_parameters(adapter: FrameworkAdapter, comm: Collectives, config: TrainConfig,
                      run_dir: Path, epoch: int) -> None:
    """Never write a checkpoint with NaN/inf parameters: the last good one stays the newest.
    (Reduced, so every rank raises or none does.)"""
    bad = comm.allreduce_sum(np.array([0.0 if adapter.parameters_finite() else 1.0]),
                             name=f"params_finite.{epoch}")[0]
    if bad:
        raise TrainingDivergedError(f"parameters became NaN/inf in epoch {epoch + 1}; no "
                                    "checkpoint written", hint=_hint(config, comm, run_dir))


def _checkpoint(adapter: FrameworkAdapter, comm: Collectives, config: TrainConfig, data: Dataset,
                store: CheckpointStore, progress: Progress, is_best: bool,
                consumed: np.ndarray | None = None,
                after_save: Callable[[], None] | None = None) -> str:
    """Rank 0 writes (atomically) while the others wait, so that when this returns on any
    rank the file is complete. ``consumed``: a step checkpoint's sampler position.
    ``after_save``: run on rank 0 as soon as the file is complete."""
    rng = comm.allgather_object(adapter.rng_state())
    samples = int(consumed.sum()) if consumed is not None else 0

    def write() -> str:
        meta: dict[str, Any] = {
            "format": FORMAT, "hvdtrain_version": __version__, "epoch": progress.epoch,
            "best_val_loss": progress.best_val_loss,
            "epochs_since_best": progress.epochs_since_best,
            "config": config.as_json(), "rng": rng, "world_size": comm.size,
            "resumes": progress.resumes,
            "sampler": None if consumed is None else {
                "n": len(consumed), "samples": samples, "mask": encode_mask(consumed)},
            "standardisation": None if data.mean is None else {
                "mean": data.mean.tolist(),
                "std": None if data.std is None else data.std.tolist()},
            # what evaluate/predict/export need to rebuild the input side without the data
            "dataset": {"name": data.name, "kind": data.kind, "num_classes": data.num_classes,
                        "num_features": data.num_features,
                        "image_shape": list(data.image_shape) if data.image_shape else None,
                        "class_names": list(data.label_names) if data.label_names else None},
        }
        path = store.save(progress.epoch, lambda path: adapter.write_checkpoint(path, meta),
                          is_best, samples)
        logger.debug("checkpoint %s written (epoch %d%s)", path, progress.epoch,
                     f", {samples} samples into the next" if samples else "")
        if after_save is not None:
            after_save()
        return str(path)

    return on_chief(comm, write)


def _stopped(signal_name: str, where: str, checkpoint: str, run_dir: Path
             ) -> TrainingStoppedError:
    return TrainingStoppedError(
        f"stopped on {signal_name} {where}; checkpoint {checkpoint} written",
        hint=f"continue with: hvdtrain train ... --resume auto --run-dir {run_dir}")


def train(adapter: FrameworkAdapter, comm: Collectives, config: TrainConfig, data: Dataset,
          run_dir: Path, options: LoopOptions | None = None,
          ranks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``ranks``: where each rank ran (host, local rank, device), recorded in the summary."""
    options = options or LoopOptions()
    started = time.monotonic()
    store = CheckpointStore(run_dir / "checkpoints", config.keep_checkpoints)
    if options.start is None:
        on_chief(comm, lambda: refuse_to_overwrite(run_dir, config.resume))
    chief = (ChiefRecorder(run_dir, config.epochs, config.log_every_seconds, config.framework)
             if comm.rank == 0 else None)
    try:  # however the run ends (done, stopped, diverged, failed), rank 0 closes its records
        summary = _run(adapter, comm, config, data, run_dir, options, ranks, store, chief,
                       started)
    finally:
        if chief:
            chief.close()
    if chief:
        _say_done(summary, run_dir)
    return summary


def _run(adapter: FrameworkAdapter, comm: Collectives, config: TrainConfig, data: Dataset,
         run_dir: Path, options: LoopOptions, ranks: list[dict[str, Any]] | None,
         store: CheckpointStore, chief: ChiefRecorder | None, started: float
         ) -> dict[str, Any]:
    """``train``'s epochs and summary; ``train`` closes rank 0's recorder (``chief``) after
    it, whatever happened."""
    n = len(data.x_train)
    progress = (options.start if options.start is not None
                else resume_progress(adapter, comm, config, store, n) if config.resume
                else Progress())
    sample_log = (SampleLog(run_dir, n, progress.epoch, progress.consumed)
                  if options.record_samples and comm.rank == 0 else None)
    history: list[dict[str, Any]] = []
    step_losses: list[float] = []
    stopped_early = False
    for epoch in range(progress.epoch, config.epochs):
        seed = config.seed + epoch
        consumed, progress.consumed = progress.consumed, None  # only the resumed epoch has one
        done_before = 0 if consumed is None else int(consumed.sum())
        batches = shard_batches(n, comm.rank, comm.size, config.batch_size, seed, consumed)
        bar = chief.progress(epoch + 1, len(batches)) if chief else None
        epoch_start = time.monotonic()
        stats: list[BatchStats] = []
        skips = 0
        # optimizer steps in a whole epoch at this world size (the schedule's --warmup-steps),
        # the last on the remainder when --grad-accumulation does not divide the batches
        accumulation = config.grad_accumulation
        steps_per_epoch = math.ceil(batch_count(n, comm.size, config.batch_size) / accumulation)
        updates = math.ceil(len(batches) / accumulation)  # those of this (maybe resumed) run
        lr = config.lr_at(epoch, comm.size, steps_per_epoch)
        batch = BatchStats(0.0, 0, 0)
        for step, idx in enumerate(batches):
            lr = config.lr_at(step_progress(epoch, step // accumulation, updates, done_before,
                                            n), comm.size, steps_per_epoch)
            if options.step_delay:
                time.sleep(options.step_delay)
            batch = adapter.train_batch(data.x_train[idx], data.y_train[idx], lr)
            if batch.nonfinite:  # identical on every rank: all stop, or all skip, here
                if config.on_nonfinite == "stop":
                    raise _diverged_at_step(comm, config, run_dir, batch, epoch, step,
                                            len(batches))
                skips += 1  # the adapter did not apply it
            if math.isfinite(batch.loss_sum):  # a skipped NaN loss stays out of the averages
                stats.append(batch)
            if options.record_step_losses:
                total = comm.allreduce_sum(np.array([batch.loss_sum, batch.count]),
                                           name=f"step.{epoch}.{step}")
                step_losses.append(float(total[0] / total[1]))
            if bar is not None:
                elapsed = max(time.monotonic() - epoch_start, 1e-9)
                bar.set_postfix(loss=f"{batch.loss_sum / batch.count:.4f}" if batch.count
                                else "n/a",
                                samples_s=f"{(step + 1) * len(idx) * comm.size / elapsed:,.0f}",
                                refresh=False)
                bar.update(1)
            if step + 1 == len(batches):
                break  # the epoch's end has its own checkpoint and stop check
            every_commit = options.commit_every
            if options.on_commit and every_commit and (step + 1) % every_commit == 0:
                position = consumed_after(n, comm.size, config.batch_size, seed, consumed,
                                          step + 1)
                if sample_log is not None:  # the commit holds these steps (elastic)
                    sample_log.commit(epoch, position)
                options.on_commit(replace(progress, consumed=position))
            every = config.checkpoint_every_steps
            due = bool(every) and (step + 1) % every == 0
            signal_name = (agree_to_stop(comm, options.stop, f"stop.{epoch}.{step}")
                           if (step + 1) % STOP_CHECK_STEPS == 0 else None)
            if due or signal_name:
                _check_parameters(adapter, comm, config, run_dir, epoch)
                mask = consumed_after(n, comm.size, config.batch_size, seed, consumed, step + 1)
                step_file = _checkpoint(
                    adapter, comm, config, data, store, progress, False, mask,
                    None if sample_log is None else partial(sample_log.commit, epoch, mask))
                if signal_name:
                    raise _stopped(signal_name, f"at epoch {epoch + 1} step {step + 1} (of "
                                   f"{len(batches)})", step_file, run_dir)
        # the step on an accumulation the epoch's end cut short (as the HF Trainer steps on
        # the remainder), so the epoch-end checkpoint and commit hold every sample trained
        if adapter.finish_accumulation():  # not finite: the same on every rank
            if config.on_nonfinite == "stop":
                raise _diverged_at_step(comm, config, run_dir, replace(batch, nonfinite=True),
                                        epoch, len(batches) - 1, len(batches))
            skips += 1
        if chief:
            chief.end_progress()
        train_seconds = time.monotonic() - epoch_start
        train_loss, train_acc, seen = _reduce(comm, stats, f"train.{epoch}")
        eval_start = time.monotonic()
        val_loss, val_acc = evaluate(adapter, comm, data.x_val, data.y_val, f"val.{epoch}")
        eval_seconds = time.monotonic() - eval_start
        problem = (f"every step of epoch {epoch + 1} had a non-finite loss"
                   if seen == 0 and batches
                   else f"validation loss became {'NaN' if math.isnan(val_loss) else 'inf'} "
                   f"after epoch {epoch + 1}"
                   if not math.isfinite(val_loss) else None)  # reduced: the same on all ranks
        if problem:
            raise TrainingDivergedError(problem, hint=_hint(config, comm, run_dir))
        is_best = val_loss < progress.best_val_loss
        progress = Progress(epoch + 1, min(val_loss, progress.best_val_loss),
                            0 if is_best else progress.epochs_since_best + 1,
                            None, progress.resumes)
        metrics = {
            "epoch": epoch + 1, "train_loss": train_loss, "train_accuracy": train_acc,
            "val_loss": val_loss, "val_accuracy": val_acc, "lr": lr,
            # training steps only: validation has its own time
            "samples_per_second": seen / max(train_seconds, 1e-9),
            "train_seconds": train_seconds, "eval_seconds": eval_seconds,
            "fp16_recoveries": int(getattr(adapter, "fp16_recoveries", 0)),
            "nonfinite_skips": skips,
        }
        if done_before:
            metrics["resumed_after_samples"] = done_before
        history.append(metrics)
        failed = _record_epoch(chief, store, metrics)  # rank 0's outcome rides on the stop
        patience = config.early_stopping_patience
        stop, failed = comm.broadcast_object(
            (patience > 0 and progress.epochs_since_best >= patience, failed))
        if failed is not None:
            raise_agreed(comm, CheckpointError(*failed))
        signal_name = agree_to_stop(comm, options.stop, f"stop.{epoch}.end")
        if options.on_commit:
            if sample_log is not None:
                sample_log.commit(epoch + 1, None)
            options.on_commit(replace(progress))
        last = stop or epoch + 1 == config.epochs
        every = config.checkpoint_every
        written = None
        if (every and ((epoch + 1) % every == 0 or last)) or signal_name:
            _check_parameters(adapter, comm, config, run_dir, epoch)
            written = _checkpoint(
                adapter, comm, config, data, store, progress, is_best, None,
                None if sample_log is None else partial(sample_log.commit, epoch + 1, None))
        if signal_name and not last:
            raise _stopped(signal_name, f"after epoch {epoch + 1}", str(written), run_dir)
        if stop:
            stopped_early = True
            if chief:
                logger.info("early stop after epoch %d: no val_loss improvement for %d epochs",
                            epoch + 1, patience)
            break
    if sample_log is not None:
        sample_log.commit(progress.epoch, None)  # the final model holds them all
    if not history:  # resumed at or past --epochs: evaluate the restored model once
        val_loss, val_acc = evaluate(adapter, comm, data.x_val, data.y_val, "val.final")
        history.append({"epoch": progress.epoch, "val_loss": val_loss, "val_accuracy": val_acc,
                        "fp16_recoveries": 0, "nonfinite_skips": 0})
    return _finish(adapter, comm, config, run_dir, history, progress, stopped_early,
                   step_losses if options.record_step_losses else None, started, ranks)


def _finish(adapter: FrameworkAdapter, comm: Collectives, config: TrainConfig, run_dir: Path,
            history: list[dict[str, Any]], progress: Progress,
            stopped_early: bool, step_losses: list[float] | None,
            started: float, ranks: list[dict[str, Any]] | None) -> dict[str, Any]:
    hashes = comm.allgather_object(adapter.parameter_hash())
    last = history[-1] if history else {}
    summary: dict[str, Any] = {
        "framework": config.framework, "world_size": comm.size,
        "epochs_run": progress.epoch, "stopped_early": stopped_early,
        "compression": config.compression, "model": config.model, "data": config.data,
        "train_loss": last.get("train_loss"), "train_accuracy": last.get("train_accuracy"),
        "val_loss": last.get("val_loss"), "val_accuracy": last.get("val_accuracy"),
        "best_val_loss": progress.best_val_loss,
        "fp16_recoveries": last.get("fp16_recoveries", 0),
        "nonfinite_skips": sum(int(h.get("nonfinite_skips", 0)) for h in history),
        "on_nonfinite": config.on_nonfinite,
        "wall_seconds": time.monotonic() - started,
        "parameter_hashes": hashes, "parameters_identical": len(set(hashes)) == 1,
        "ranks": ranks or [],
        "resumes": progress.resumes,
        "config": config.as_json(), "hvdtrain_version": __version__,
        "frameworks_loaded": comm.allgather_object(
            sorted(m for m in ("torch", "tensorflow") if m in sys.modules)),
    }
    if step_losses is not None:
        summary["step_losses"] = step_losses
    # like a checkpoint: a full disk is one line on every rank, never half a summary.json
    on_chief(comm, partial(_write_run_file, run_dir, "summary.json",
                           json.dumps(summary, indent=2)))
    return summary


def _say_done(summary: dict[str, Any], run_dir: Path) -> None:
    """Rank 0's last line (a result, on stdout)."""
    val = summary["val_accuracy"]
    print(f"done: {summary['epochs_run']} epochs on {summary['world_size']} ranks in "
          f"{summary['wall_seconds']:.1f} s, val_acc "
          f"{'n/a' if val is None else f'{val:.4f}'}, parameters identical on all ranks: "
          f"{summary['parameters_identical']}"
          # under hvdtrain's launcher, the launcher says where (host:path, or copied)
          f"{'' if JOB_DIR_ENV in os.environ else f'; results in {run_dir}'}", flush=True)
