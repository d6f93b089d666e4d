"""Embedding gradients sent as the rows a step touched (``--sparse-embeddings``, torch).

``comm.sparse_rows`` decides per embedding matrix; this module applies the decision to a torch
model and keeps the optimizer dense:

* a chosen ``nn.Embedding`` gets ``sparse=True``, so autograd produces a sparse COO gradient
  holding only the looked-up rows (accumulation appends to it);
* Horovod's ``DistributedOptimizer`` already averages a sparse gradient by allgathering its
  indices and values; ``send_coalesced`` merges repeated rows first (a frequent token is one
  row on the wire, not one per occurrence). The explicit path (bf16, PowerSGD) uses the same
  Horovod call, ``average_sparse``;
* ``densify`` turns the averaged gradient back into a dense one before the optimizer step,
  so Adam/AdamW, clipping and the finite check work unchanged and the update equals the dense
  run's up to float summation order.

Not chosen: a frozen embedding, or one whose weight is shared with another module (a tied LM
head adds a dense gradient to it).
"""

from __future__ import annotations

from collections import Counter
from types import ModuleType
from typing import Any

from hvdtrain.comm.sparse_rows import Choice, choose


def make_sparse(torch: Any, model: Any, mode: str, touched: int, world: int
                ) -> list[tuple[str, Choice]]:
    """Switch the embeddings ``mode`` chooses to sparse gradients; (name, choice) of each
    embedding considered (its ``sparse`` flag set to the choice)."""
    shared = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    decided = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Embedding) or not module.weight.requires_grad:
            continue
        if shared[id(module.weight)] > 1:  # tied: its gradient also has a dense part
            continue
        rows, width = module.weight.shape
        choice = choose(mode, int(rows), int(width), touched, world)
        module.sparse = choice.sparse
        decided.append((name, choice))
    return decided


def sparse_parameters(model: Any) -> list[Any]:
    """The parameters whose gradients are sparse (their embedding has ``sparse=True``)."""
    import torch

    return [m.weight for m in model.modules()
            if isinstance(m, torch.nn.Embedding) and m.sparse and m.weight.requires_grad]


def empty_gradient(torch: Any, param: Any) -> Any:
    """A sparse gradient with no rows: for a sparse parameter this rank's forward pass did not
    use, so every rank still takes part in the same allgather."""
    rows, width = param.shape
    return torch.sparse_coo_tensor(torch.empty((1, 0), dtype=torch.long),
                                   torch.empty((0, width), dtype=param.dtype), (rows, width),
                                   check_invariants=False)


def fill_missing(torch: Any, params: list[Any]) -> None:
    for p in params:
        if p.grad is None:
            p.grad = empty_gradient(torch, p)


def send_coalesced(optimizer: Any) -> None:
    """Make Horovod's ``DistributedOptimizer`` merge repeated rows of a sparse gradient before
    its allgather: Horovod sends ``grad._indices()`` as they are, one row per occurrence."""
    original = optimizer._sparse_allreduce_grad_async

    def coalesced(p: Any, name: str) -> Any:
        p.grad = p.grad.coalesce()
        return original(p, name)

    optimizer._sparse_allreduce_grad_async = coalesced


def average_sparse(hvd: ModuleType, params: list[Any], prefix: str) -> list[Any]:
    """Start the allgather-average of each sparse parameter's gradient; call the returned
    handles (in order) for the averaged sparse gradients."""
    return [hvd.sparse_allreduce_async(p.grad.coalesce(), name=f"{prefix}.{k}", op=hvd.Average)
            for k, p in enumerate(params)]


def densify(params: list[Any], divide_by: float = 1.0) -> None:
    """Averaged sparse gradients → dense ones for the optimizer (``divide_by``: the world size
    when Horovod summed instead of averaging, as fp16 compression has it do)."""
    for p in params:
        if p.grad is not None and p.grad.is_sparse:
            dense = p.grad.coalesce().to_dense()
            p.grad = dense / divide_by if divide_by != 1.0 else dense
