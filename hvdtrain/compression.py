"""Overflow-safe fp16 gradient compression for users' own Horovod TensorFlow scripts.

Why: ``hvd.Compression.fp16`` casts each gradient to fp16 and Horovod *sums* in fp16, so two
ranks sending 40000.0 receive ``inf`` (with ``op=hvd.Average`` too: the division comes after
the sum). Pass ``compression=SafeFP16`` instead, to ``hvd.DistributedGradientTape``,
``hvd.DistributedOptimizer`` or ``hvd.allreduce``; it applies the safeguards hvdtrain's own
training uses (``hvdtrain.comm.fp16``):

1. each rank sends ``grad / size`` in fp16 and the result is scaled back in the original
   dtype, so the fp16 sum can only overflow if a single rank's own gradient does, and
   ``op=hvd.Sum`` gets its large result in fp32;
2. a non-finite result (identical on every rank, so every rank decides alike) is redone in the
   original dtype from the gradient kept at compress time.

The redo must know the reduction: ``SafeFP16`` is for ``op=hvd.Average`` (Horovod's default),
``SafeFP16Sum`` for ``op=hvd.Sum``. Global process set only (it scales by ``hvd.size()``).
TensorFlow only; for PyTorch, hvdtrain's own training does the same (``--compression fp16``).
"""

from __future__ import annotations

from hvdtrain.comm.fp16 import SafeFP16, SafeFP16Sum

__all__ = ["SafeFP16", "SafeFP16Sum"]
