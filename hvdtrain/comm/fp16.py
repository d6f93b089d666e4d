"""fp16 gradient compression that cannot silently break training.

Horovod's ``Compression.fp16`` casts to fp16 and sums in fp16, so large gradients become inf
(two ranks sending 40000.0 receive inf, with ``op=Average`` too: the division comes after the
sum). ``SafeFP16`` fixes both halves of that:

1. **pre-scale before the cast**: each rank sends ``grad / size`` and the allreduce *sums*, so
   the fp16 result is the average and can only overflow if a single rank's own scaled
   gradient does;
2. **detect and recover**: a non-finite result (identical on every rank, so every rank decides
   the same) is redone in fp32 from the original gradient kept at compress time, in fixed
   parameter order, and counted (``fp16_recoveries`` in the metrics).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType
from typing import Any


class SafeFP16Torch:
    """``size``: the world size, or a function returning it (Horovod elastic changes it)."""

    def __init__(self, size: int | Callable[[], int]) -> None:
        self._size = size
        self._originals: dict[int, Any] = {}
        self.compressor = self  # Horovod calls compressor.compress / .decompress

    def compress(self, tensor: Any) -> tuple[Any, Any]:
        self._originals[id(tensor)] = tensor.detach().clone()
        if not tensor.dtype.is_floating_point:
            return tensor, None
        return (tensor / self.size).half(), tensor.dtype

    @property
    def size(self) -> int:
        return self._size() if callable(self._size) else self._size

    def decompress(self, tensor: Any, ctx: Any) -> Any:
        return tensor if ctx is None else tensor.to(ctx)

    def recover(self, model: Any, hvd: ModuleType) -> int:
        """Redo non-finite results in fp32; returns 1 if this step needed it, else 0."""
        import torch

        recovered = 0
        for name, param in model.named_parameters():
            grad = param.grad
            if grad is None or bool(torch.isfinite(grad).all()):
                continue
            original = self._originals.get(id(grad))
            if original is None:
                continue
            exact = hvd.allreduce(original, op=hvd.Average, name=f"hvdtrain.fp32_retry.{name}")
            grad.copy_(exact)
            recovered = 1
        self._originals.clear()
        return recovered


def torch_compression(kind: str, hvd: ModuleType) -> SafeFP16Torch | None:
    return SafeFP16Torch(lambda: int(hvd.size())) if kind == "fp16" else None


def tf_allreduce_gradients(grads: list[Any], hvd: ModuleType, size: int | Any,
                           compression: str) -> tuple[list[Any], Any]:
    """Average ``grads`` across ranks (inside a ``tf.function``); returns (grads, recovered).

    ``compression='fp16'`` applies the same two safeguards as ``SafeFP16Torch``: pre-scaled
    fp16 sum, and an fp32 redo (``tf.cond`` on a result identical on every rank, so all ranks
    take the same branch) when the fp16 result is not finite.
    """
    import tensorflow as tf

    grads = [tf.identity(g) for g in grads]  # graph tensors, even for captured constants
    if compression != "fp16":
        return list(hvd.grouped_allreduce(grads, op=hvd.Average)), tf.constant(0)
    if os.environ.get("HOROVOD_ELASTIC") == "1":  # traced once; the size may change later
        size = hvd.size_op()
    halves = [tf.cast(g / tf.cast(size, g.dtype), tf.float16) for g in grads]
    summed = [tf.cast(g, tf.float32) for g in hvd.grouped_allreduce(halves, op=hvd.Sum)]
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in summed])

    def exact() -> list[Any]:
        return list(hvd.grouped_allreduce(grads, op=hvd.Average))

    result = tf.cond(finite, lambda: summed, exact)
    return list(result), tf.cast(tf.logical_not(finite), tf.int32)


class SafeFP16:
    """Horovod TensorFlow compressor (``compression=SafeFP16``) for ``op=hvd.Average``: the two
    safeguards of ``tf_allreduce_gradients``, in Horovod's ``compress``/``decompress`` shape so
    users' own scripts get them. Public name: ``hvdtrain.compression.SafeFP16``."""

    summing = False  # the reduction an fp32 redo must repeat

    @classmethod
    def compress(cls, tensor: Any) -> tuple[Any, Any]:
        import horovod.tensorflow as hvd
        import tensorflow as tf

        if not tensor.dtype.is_floating:
            return tensor, None
        return tf.cast(tensor / hvd.size(), tf.float16), (tensor.dtype, tensor)

    @classmethod
    def decompress(cls, tensor: Any, ctx: Any) -> Any:
        import horovod.tensorflow as hvd
        import tensorflow as tf

        if ctx is None:
            return tensor
        dtype, original = ctx
        # Average: Horovod divided sum(g/size) by size once more; Sum: sum(g/size). Either
        # way, times size is the exact reduction, computed in the original dtype.
        result = tf.cast(tensor, dtype) * tf.cast(hvd.size(), dtype)
        op = hvd.Sum if cls.summing else hvd.Average
        return tf.cond(tf.reduce_all(tf.math.is_finite(result)), lambda: result,
                       lambda: hvd.allreduce(original, op=op))


class SafeFP16Sum(SafeFP16):
    """``SafeFP16`` for ``op=hvd.Sum``."""

    summing = True
