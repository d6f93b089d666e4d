"""bf16 and PowerSGD gradient averaging for the TensorFlow adapter, inside its ``tf.function``.

The same algorithms as ``comm.torch_compression`` (read its notes: stock Horovod 0.28.1 has no
bfloat16, so bf16 travels as int16 bit patterns through ``alltoall`` + ``allgather`` with an
fp32 sum in between; the Horovod that ``scripts/build_horovod.py`` builds sums bf16 in one MPI
allreduce, which this takes where it can; PowerSGD's math is ``comm.powersgd``'s, once for both
frameworks). Here the state lives in ``tf.Variable``s that the compiled step updates; a round
whose Q came out non-finite (a NaN/inf gradient on some rank) keeps the old state on every
rank.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

from hvdtrain.comm.powersgd import Ops, Plan, decode, drive, encode, initial_qs, powersgd_round


def _size(hvd: ModuleType, size: int) -> Any:
    import tensorflow as tf

    # traced once; under Horovod elastic the size may change later
    if os.environ.get("HOROVOD_ELASTIC") == "1":
        return tf.cast(hvd.size_op(), tf.int32)
    return tf.constant(size, tf.int32)


_DT_BFLOAT16 = 14  # TensorFlow's types.proto


def native_bf16_sum(hvd: ModuleType) -> bool:
    """Whether Horovod's TensorFlow allreduce sums bfloat16 itself: hvdtrain's build (its
    ``HorovodAllreduce`` op accepts the type) under the MPI controller (Gloo has no bf16 sum),
    with the tensors on the CPU (no GPU visible: the sum is an MPI op's, not NCCL's)."""
    import tensorflow as tf
    from tensorflow.python.framework import op_def_registry  # ops loaded by Horovod's import

    op = op_def_registry.get("HorovodAllreduce")
    accepts = op is not None and any(
        attr.name == "T" and _DT_BFLOAT16 in attr.allowed_values.list.type for attr in op.attr)
    on_cpu = not tf.config.get_visible_devices("GPU")
    return accepts and on_cpu and bool(hvd.mpi_enabled())


def bf16_average(hvd: ModuleType, size: int, grads: list[Any]) -> list[Any]:
    """The average of ``grads`` across ranks, sent as bfloat16 (in a ``tf.function``): one
    allreduce that Horovod sums in bf16 where it can (``native_bf16_sum``), else an
    ``alltoall`` and an ``allgather`` with the sum in float32."""
    import tensorflow as tf

    world = _size(hvd, size)
    if native_bf16_sum(hvd):
        wire = tf.concat([tf.reshape(tf.cast(g, tf.bfloat16), [-1]) for g in grads], 0)
        summed = hvd.allreduce(wire, op=hvd.Sum, name="hvdtrain.bf16.sum")
        return _split(tf.cast(summed, tf.float32) / tf.cast(world, tf.float32), grads)
    flat = tf.concat([tf.reshape(tf.cast(g, tf.float32), [-1]) for g in grads], 0)
    total = tf.size(flat)
    chunk = tf.maximum(1, (total + world - 1) // world)
    padded = tf.pad(flat, [[0, chunk * world - total]])
    wire = tf.bitcast(tf.cast(tf.reshape(padded, [world, chunk]), tf.bfloat16), tf.int16)
    got = tf.reshape(hvd.alltoall(wire, name="hvdtrain.bf16.scatter"), [world, chunk])
    mine = tf.reduce_sum(tf.cast(tf.bitcast(got, tf.bfloat16), tf.float32), 0) / tf.cast(
        world, tf.float32)
    gathered = hvd.allgather(tf.bitcast(tf.cast(mine, tf.bfloat16), tf.int16)[None],
                             name="hvdtrain.bf16.gather")
    return _split(tf.reshape(tf.cast(tf.bitcast(gathered, tf.bfloat16), tf.float32), [-1]),
                  grads)


def _split(averaged: Any, grads: list[Any]) -> list[Any]:
    """The flat float32 ``averaged`` cut back into tensors shaped and typed as ``grads``."""
    import tensorflow as tf

    out, start = [], 0
    for g in grads:
        n = g.shape.num_elements()  # a variable's gradient: static
        out.append(tf.cast(tf.reshape(averaged[start:start + n], tf.shape(g)), g.dtype))
        start += n
    return out


def tf_ops() -> Ops[Any]:
    import tensorflow as tf

    return Ops(matmul=tf.matmul, transpose=tf.transpose, reshape=tf.reshape,
               orthogonalise=lambda p: tf.linalg.qr(p)[0])


class PowerSGDTF:
    """Q per compressed tensor and this rank's error buffers as variables; ``steps`` (the
    rounds so far) is Python's: the adapter picks the full-precision step function for the
    first ``warmup_steps`` rounds."""

    def __init__(self, hvd: ModuleType, shapes: list[tuple[int, ...]], rank: int,
                 warmup_steps: int, seed: int) -> None:
        import tensorflow as tf

        self.tf, self.hvd = tf, hvd
        self.plan = Plan.of(shapes, rank)
        self.warmup_steps = warmup_steps
        self.steps = 0
        self.ops = tf_ops()
        self.qs = [tf.Variable(q, trainable=False) for q in initial_qs(self.plan, seed)]
        self.errors = [tf.Variable(tf.zeros((n, m)), trainable=False)
                       for n, m, _ in self.plan.compressed_layouts]

    def in_warmup(self) -> bool:
        """Whether the coming round is still a full-precision one."""
        return self.steps < self.warmup_steps

    def _average(self, tensors: list[Any], name: str) -> list[Any]:
        if not tensors:
            return []
        return list(self.hvd.grouped_allreduce(tensors, op=self.hvd.Average, name=name))

    def average(self, grads: list[Any]) -> list[Any]:
        """One compressed round (traced into the compiled step)."""
        tf = self.tf
        grads = [tf.cast(g, tf.float32) for g in grads]
        names = iter(("hvdtrain.powersgd.p", "hvdtrain.powersgd.q"))
        out, errors, qs = drive(powersgd_round(grads, [e.read_value() for e in self.errors],
                                               [q.read_value() for q in self.qs], self.plan,
                                               self.ops),
                                lambda ts: self._average(ts, next(names)))
        if qs:
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(q)) for q in qs])
            for variable, new in [*zip(self.errors, errors, strict=True),
                                  *zip(self.qs, qs, strict=True)]:
                variable.assign(tf.where(finite, new, variable))
        return out

    # -- checkpointed state -----------------------------------------------------------------
    def shared_state(self) -> dict[str, Any]:
        return {"steps": self.steps, "qs": encode([q.numpy() for q in self.qs])}

    def load_shared_state(self, state: dict[str, Any]) -> None:
        qs = decode(state["qs"])
        if [q.shape for q in qs] != [tuple(q.shape) for q in self.qs]:
            raise ValueError("PowerSGD state of another model or --powersgd-rank")
        self.steps = int(state["steps"])
        for variable, value in zip(self.qs, qs, strict=True):
            variable.assign(value)

    def local_state(self) -> list[dict[str, Any]]:
        return encode([e.numpy() for e in self.errors])

    def load_local_state(self, items: list[dict[str, Any]]) -> None:
        errors = decode(items)
        if [e.shape for e in errors] == [tuple(e.shape) for e in self.errors]:
            for variable, value in zip(self.errors, errors, strict=True):
                variable.assign(value)
