"""TensorFlow / Keras 3 behind the ``FrameworkAdapter`` seam, through Horovod's core TF ops.

Horovod's Keras integration (``horovod.tensorflow.keras``) is broken under Keras 3, and
``DistributedGradientTape`` calls ``.ref()`` that Keras 3 variables lack. So this adapter uses
Horovod's core ops directly: a compiled (``tf.function``) train step computes gradients with
a plain ``GradientTape`` and averages them with ``hvd.grouped_allreduce`` (``comm.fp16`` for
overflow-safe fp16, ``comm.tf_compression`` for bf16 and PowerSGD, whose Q and step count go
into rank 0's checkpoint and whose per-rank error buffers ride with each rank's RNG state);
model and optimizer variables are broadcast through their backing
``tf.Variable`` (``v.value``) once they exist. Options behave as in the torch adapter:
weight decay is L2 on the gradient for adam/sgd and decoupled for adamw, in both cases for
weight matrices only (no decay on biases and normalisation weights, every variable of one
dimension), SGD uses momentum 0.9, Adam's epsilon is 1e-8, gradient accumulation sums N
passes before one allreduce, ``--clip-grad-norm`` clips the averaged gradient (the same on
every rank) before the step, only trainable variables (not frozen ones) are trained.
``--precision bf16`` is a ``mixed_bfloat16`` model (float32 variables, float32 loss);
``fp16`` is ``mixed_float16`` with a dynamic loss scale, on a GPU only.
Checkpoints are ``.npz`` files read with ``allow_pickle=False`` (no code runs on load).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from hvdtrain import comm
from hvdtrain.config import TrainConfig
from hvdtrain.errors import CheckpointError, ConfigError
from hvdtrain.frameworks.tensorflow.offline import OFFLINE, pin_device
from hvdtrain.types import BatchStats, Dataset, DeviceChoice

# fp16's dynamic loss scale (as torch's GradScaler): start, halved after a non-finite
# gradient, doubled after this many good steps
LOSS_SCALE, LOSS_SCALE_GROWTH_STEPS = 2.0 ** 16, 2000

# name → (keras.optimizers class name, extra keyword arguments, weight decay applied as L2)
OPTIMIZERS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "adam": ("Adam", {"epsilon": 1e-8}, True),
    "adamw": ("AdamW", {"epsilon": 1e-8}, False),  # decoupled: weight_decay passed below
    "sgd": ("SGD", {"momentum": 0.9}, True),
}


class TensorFlowAdapter:
    name = "tensorflow"

    def __init__(self) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        self.tf = tf
        self.comm = comm.init("horovod.tensorflow",
                               lambda values: tf.constant(values, dtype=tf.float64))
        self.device = "cpu"
        self.fp16_recoveries = 0
        self.powersgd: Any = None

    def pin(self, choice: DeviceChoice) -> None:
        threads = max(1, (os.cpu_count() or 1) // max(1, self.comm.local_size))
        self.device = pin_device(self.tf, choice, threads)

    def describe_device(self) -> str:
        return self.device

    def setup(self, config: TrainConfig, data: Dataset, broadcast: bool = True) -> None:
        import keras

        tf = self.tf
        if config.precision == "fp16" and self.device == "cpu":
            raise ConfigError("--precision fp16 needs a CUDA GPU; on a CPU use --precision bf16")
        self.binary = data.num_classes == 2
        self.model = OFFLINE.build(config, data)  # seeded: same init everywhere
        kind, extra, decay_as_l2 = OPTIMIZERS[config.optimizer]
        if not decay_as_l2:
            extra = {**extra, "weight_decay": config.weight_decay}
        self.optimizer = getattr(keras.optimizers, kind)(config.scaled_lr(self.comm.size),
                                                         **extra)
        trained = self.model.trainable_variables
        # weight matrices only: biases and normalisation weights are left undecayed
        self.decayed = [len(v.shape) > 1 for v in trained]
        if not decay_as_l2 and config.weight_decay:
            self.optimizer.exclude_from_weight_decay(
                var_list=[v for v in trained if len(v.shape) <= 1])
        self.l2 = config.weight_decay if decay_as_l2 else 0.0
        self.clip_grad_norm = config.clip_grad_norm
        self.loss_scale = (tf.Variable(LOSS_SCALE, trainable=False, dtype=tf.float32)
                           if config.precision == "fp16" else None)
        self._good_steps = tf.Variable(0, trainable=False, dtype=tf.int64)
        self.optimizer.build(trained)
        self.accumulation = config.grad_accumulation
        self.compression = config.compression
        if config.compression == "powersgd":
            from hvdtrain.comm.tf_compression import PowerSGDTF

            self.powersgd = PowerSGDTF(self.comm.hvd, [tuple(v.shape) for v in trained],
                                       config.powersgd_rank, config.powersgd_warmup_steps,
                                       config.seed)
        self.accumulated = [tf.Variable(tf.zeros_like(v.value), trainable=False)
                            for v in self.model.trainable_variables]
        self._passes = 0
        if broadcast:
            self.broadcast_state()
        tf.random.set_global_generator(tf.random.Generator.from_seed(
            config.seed * 1000 + self.comm.rank))  # per-rank stream
        x_spec = tf.TensorSpec((None, *data.x_train.shape[1:]), tf.as_dtype(data.x_train.dtype))
        y_spec = tf.TensorSpec((None,), tf.int64)
        self._accumulate_fn = tf.function(self._accumulate, input_signature=[x_spec, y_spec],
                                          reduce_retracing=True)
        self._apply_fn = tf.function(self._apply)
        self._step_fn = tf.function(self._step, input_signature=[x_spec, y_spec],
                                    reduce_retracing=True)
        # PowerSGD's full-precision warm-up steps: the same, averaged uncompressed
        self._apply_full_fn = tf.function(lambda: self._apply(full=True))
        self._step_full_fn = tf.function(lambda x, y: self._step(x, y, full=True),
                                         input_signature=[x_spec, y_spec],
                                         reduce_retracing=True)
        self._eval_fn = tf.function(self._evaluate, input_signature=[x_spec, y_spec],
                                    reduce_retracing=True)

    # -- compiled pieces -----------------------------------------------------------------
    def _loss(self, logits: Any, y: Any) -> tuple[Any, Any]:
        tf = self.tf
        logits = tf.cast(logits, tf.float32)  # a mixed-precision model's are bf16/fp16
        if self.binary:
            logits = tf.squeeze(logits, 1)
            labels = tf.cast(y, tf.float32)
            loss = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels,
                                                                         logits=logits))
            predicted = tf.cast(logits > 0, tf.int64)
        else:
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y,
                                                                                logits=logits))
            predicted = tf.argmax(logits, 1)
        return loss, tf.reduce_sum(tf.cast(tf.equal(predicted, y), tf.int32))

    def _gradients(self, x: Any, y: Any) -> tuple[Any, Any, list[Any]]:
        tf = self.tf
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            loss_sum, correct = self._loss(self.model(x, training=True), y)
            # a non-finite loss on this rank poisons its gradient (loss × 0 + 1: exactly 1,
            # or NaN for NaN/inf); the allreduce carries it to every rank, so all skip the
            # same step (the torch adapter does the same)
            poison = tf.stop_gradient(loss_sum * 0 + 1)
            # an empty batch (a resumed epoch's last few samples on more ranks than
            # samples) adds a zero gradient instead of 0/0
            scaled = loss_sum * poison / (tf.cast(tf.maximum(tf.shape(y)[0], 1), tf.float32)
                                          * self.accumulation)
            if self.loss_scale is not None:  # fp16: keeps small gradients from underflowing
                scaled = scaled * self.loss_scale
        return loss_sum, correct, tape.gradient(scaled, [v.value for v in variables])

    def _accumulate(self, x: Any, y: Any) -> tuple[Any, Any]:
        loss_sum, correct, grads = self._gradients(x, y)
        for slot, grad in zip(self.accumulated, grads, strict=True):
            slot.assign_add(grad)
        return loss_sum, correct

    def _apply(self, full: bool = False) -> Any:
        recovered, applied = self._reduce_and_apply([a.read_value() for a in self.accumulated],
                                                    full)
        for slot in self.accumulated:
            slot.assign(self.tf.zeros_like(slot))
        return recovered, applied

    def _step(self, x: Any, y: Any, full: bool = False) -> tuple[Any, Any, Any, Any]:
        """Without gradient accumulation: gradients, allreduce and update in one compiled
        call (one dispatch per step instead of two, and no accumulation buffers)."""
        loss_sum, correct, grads = self._gradients(x, y)
        # an embedding's gradient is IndexedSlices; dense, as the accumulation buffers make it
        grads = [self.tf.convert_to_tensor(g) for g in grads]
        recovered, applied = self._reduce_and_apply(grads, full)
        return loss_sum, correct, recovered, applied

    def _average(self, local_grads: list[Any], full: bool) -> tuple[list[Any], Any]:
        """(averaged gradients, fp16 recovered) by ``--compression``; ``full``: uncompressed
        (PowerSGD's warm-up)."""
        from hvdtrain.comm.fp16 import tf_allreduce_gradients

        tf = self.tf
        if self.compression == "bf16":
            from hvdtrain.comm.tf_compression import bf16_average

            return bf16_average(self.comm.hvd, self.comm.size, local_grads), tf.constant(0)
        if self.powersgd is not None and not full:
            local_grads = [tf.identity(g) for g in local_grads]
            return self.powersgd.average(local_grads), tf.constant(0)
        compression = "none" if self.powersgd is not None else self.compression
        return tf_allreduce_gradients(local_grads, self.comm.hvd, self.comm.size, compression)

    def _reduce_and_apply(self, local_grads: list[Any], full: bool = False) -> tuple[Any, Any]:
        tf = self.tf
        variables = self.model.trainable_variables
        grads, recovered = self._average(local_grads, full)
        if self.loss_scale is not None:
            grads = [g / self.loss_scale for g in grads]
        # identical on every rank (averaged gradients): all take the same branch
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])

        def apply() -> Any:
            step = grads
            if self.clip_grad_norm:  # of the averaged gradient: the same on every rank
                step, _ = tf.clip_by_global_norm(step, self.clip_grad_norm)
            if self.l2:
                step = [g + self.l2 * v.value if decayed else g
                        for g, v, decayed in zip(step, variables, self.decayed, strict=True)]
            self.optimizer.apply_gradients(zip(step, variables, strict=True))
            return tf.constant(True)

        applied = tf.cond(finite, apply, lambda: tf.constant(False))
        if self.loss_scale is not None:
            self._update_loss_scale(applied)
        return recovered, applied

    def _update_loss_scale(self, applied: Any) -> None:
        """Halve the fp16 loss scale after a non-finite gradient, double it after
        ``LOSS_SCALE_GROWTH_STEPS`` good steps in a row (identical on every rank)."""
        tf = self.tf
        assert self.loss_scale is not None
        good = tf.where(applied, self._good_steps + 1, tf.zeros_like(self._good_steps))
        grow = good >= LOSS_SCALE_GROWTH_STEPS
        self.loss_scale.assign(tf.where(applied, tf.where(grow, self.loss_scale * 2,
                                                          self.loss_scale),
                                        tf.maximum(self.loss_scale / 2, 1.0)))
        self._good_steps.assign(tf.where(grow, tf.zeros_like(good), good))

    def _evaluate(self, x: Any, y: Any) -> tuple[Any, Any]:
        return self._loss(self.model(x, training=False), y)

    # -- the seam ------------------------------------------------------------------------
    def train_batch(self, x: np.ndarray, y: np.ndarray, lr: float) -> BatchStats:
        self.optimizer.learning_rate.assign(lr)
        if self.accumulation == 1:
            step = self._step_full_fn if self._full_precision() else self._step_fn
            loss_sum, correct, recovered, applied = step(x, y)
            self._count_round()
            self.fp16_recoveries += int(recovered)
            return BatchStats(float(loss_sum), int(correct), len(y), not bool(applied))
        loss_sum, correct = self._accumulate_fn(x, y)
        self._passes += 1
        nonfinite = self._apply_accumulated() if self._passes == self.accumulation else False
        return BatchStats(float(loss_sum), int(correct), len(y), nonfinite)

    def finish_accumulation(self) -> bool | None:
        if self._passes == 0:
            return None
        # each pass was divided by N: k < N of them make the mean when multiplied by N/k
        # (before averaging, so PowerSGD's error feedback sees the step's own scale)
        for slot in self.accumulated:
            slot.assign(slot * (self.accumulation / self._passes))
        return self._apply_accumulated()

    def _apply_accumulated(self) -> bool:
        """Average the accumulation buffers, apply them and empty them; whether they were
        non-finite (then not applied)."""
        self._passes = 0
        recovered, applied = (self._apply_full_fn if self._full_precision()
                              else self._apply_fn)()
        self._count_round()
        self.fp16_recoveries += int(recovered)
        return not bool(applied)  # never applied a NaN/inf update

    def _full_precision(self) -> bool:
        """The coming step is one of PowerSGD's full-precision warm-up steps."""
        return self.powersgd is not None and self.powersgd.in_warmup()

    def _count_round(self) -> None:
        if self.powersgd is not None:
            self.powersgd.steps += 1

    def parameters_finite(self) -> bool:
        values = [np.asarray(v.numpy()) for v in self.model.variables]
        return all(bool(np.isfinite(a).all()) for a in values if a.dtype.kind == "f")

    def evaluate_batch(self, x: np.ndarray, y: np.ndarray) -> BatchStats:
        loss_sum, correct = self._eval_fn(x, y)
        return BatchStats(float(loss_sum), int(correct), len(y))

    def _all_variables(self) -> list[Any]:
        return list(self.model.variables) + list(self.optimizer.variables)

    def broadcast_state(self) -> None:
        self.comm.hvd.broadcast_variables([v.value for v in self._all_variables()],
                                          root_rank=0)
        if self.powersgd is not None:  # Q and the step count: rank 0's (a resumed one's)
            self.powersgd.load_shared_state(self.comm.broadcast_object(
                self.powersgd.shared_state()))

    def snapshot(self) -> Any:
        arrays = [np.array(v.numpy(), copy=True) for v in self._all_variables()]
        if self.powersgd is None:
            return arrays
        return arrays, (self.powersgd.shared_state(), self.powersgd.local_state())

    def restore_snapshot(self, snapshot: Any) -> None:
        if isinstance(snapshot, tuple):
            snapshot, (shared, local) = snapshot
            if self.powersgd is not None:
                self.powersgd.load_shared_state(shared)
                self.powersgd.load_local_state(local)
        for variable, array in zip(self._all_variables(), snapshot, strict=True):
            variable.assign(array)
        for slot in self.accumulated:  # no half-accumulated step survives
            slot.assign(self.tf.zeros_like(slot))
        self._passes = 0

    def parameter_hash(self) -> str:
        digest = hashlib.sha256()
        for variable in self.model.variables:
            digest.update(variable.path.encode())
            digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
        return digest.hexdigest()

    def rng_state(self) -> Any:
        """This rank's own state for the checkpoint: its RNG and, with PowerSGD, its error
        buffers (what compression has deferred on this rank)."""
        rng = self.tf.random.get_global_generator().state.numpy().tolist()
        if self.powersgd is None:
            return rng
        return {"rng": rng, "powersgd_errors": self.powersgd.local_state()}

    def set_rng_state(self, state: Any) -> None:
        if isinstance(state, dict):
            if self.powersgd is not None and state.get("powersgd_errors") is not None:
                self.powersgd.load_local_state(state["powersgd_errors"])
            state = state["rng"]
        self.tf.random.get_global_generator().state.assign(np.asarray(state, dtype=np.int64))

    def write_checkpoint(self, path: Path, meta: dict[str, Any]) -> None:
        if self.powersgd is not None:
            meta = {**meta, "compression_state": self.powersgd.shared_state()}
        arrays = {f"v{i:05d}": v.numpy() for i, v in enumerate(self._all_variables())}
        with path.open("wb") as handle:
            np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)

    def read_checkpoint(self, path: Path) -> dict[str, Any]:
        return OFFLINE.read_checkpoint(path)

    def apply_checkpoint(self, payload: dict[str, Any]) -> None:
        variables = self._all_variables()
        arrays = payload.get("arrays", [])
        shapes_fit = len(arrays) == len(variables) and all(
            tuple(a.shape) == tuple(v.shape) for a, v in zip(arrays, variables, strict=True))
        if not shapes_fit:
            raise CheckpointError("checkpoint does not fit this model "
                                  f"({len(arrays)} arrays for {len(variables)} variables)")
        for variable, array in zip(variables, arrays, strict=True):
            variable.assign(array)
        if self.powersgd is not None and payload.get("compression_state"):
            try:
                self.powersgd.load_shared_state(payload["compression_state"])
            except (KeyError, ValueError) as exc:
                raise CheckpointError(f"checkpoint does not fit this run ({exc})") from None
