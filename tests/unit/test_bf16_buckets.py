"""bf16's bucket layout (``comm.torch_compression.bucket_layout``): gradients in backward order
(the reverse of the parameters'), each bucket closed once it reaches its byte budget;
``Bf16Torch``'s buffers: each bucket sends from one bf16 buffer it keeps, and the average is
written into the gradients it was given; and at 3+ ranks, one bf16 allreduce a bucket where
Horovod sums bf16 (hvdtrain's build, under MPI)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from hvdtrain.comm.torch_compression import (
    BUCKET_BYTES,
    Bf16Torch,
    bucket_layout,
    native_bf16_sum,
)


def test_reverse_order_closed_at_the_budget() -> None:
    assert bucket_layout([10, 10, 10, 10, 10], 20) == [[4, 3], [2, 1], [0]]
    # one tensor over the budget is a bucket of its own once it closes one
    assert bucket_layout([4, 100, 4], 50) == [[2, 1], [0]]


def test_everything_placed_once() -> None:
    sizes = [7, 300, 1, 1, 90, 4096, 3]
    layout = bucket_layout(sizes, 100)
    assert sorted(i for bucket in layout for i in bucket) == list(range(len(sizes)))
    assert all(sum(sizes[i] for i in bucket) >= 100 for bucket in layout[:-1])


def test_no_parameters_no_buckets() -> None:
    assert bucket_layout([], BUCKET_BYTES) == []


def test_the_bench_mlp_gets_ddps_two_buckets() -> None:
    # 128→1024→1024→1: W1, b1, W2, b2, W3, b3 in float32 bytes
    sizes = [4 * 128 * 1024, 4 * 1024, 4 * 1024 * 1024, 4 * 1024, 4 * 1024, 4]
    assert bucket_layout(sizes, BUCKET_BYTES) == [[5, 4, 3, 2], [1, 0]]


class _SameGradientsEverywhere:
    """What Bf16Torch uses of Horovod, for ranks that all hold this rank's gradients; a
    collective's handle is its result."""

    def __init__(self, torch: Any) -> None:
        self.torch = torch

    def synchronize(self, handle: Any) -> Any:
        return handle


class _TwinRanks(_SameGradientsEverywhere):
    """Two ranks: the allgather returns this rank's bytes twice."""

    def size(self) -> int:
        return 2

    def allgather_async(self, tensor: Any, name: str | None = None) -> Any:
        return self.torch.cat([tensor, tensor])


def _reducer_of_two_parameters(torch: Any, hvd: Any) -> tuple[list[Any], Bf16Torch]:
    """A 3×4 and a 5-element parameter in one bucket."""
    params = [torch.nn.Parameter(torch.zeros(3, 4)), torch.nn.Parameter(torch.zeros(5))]
    return params, Bf16Torch(torch, hvd, params, bucket_bytes=1 << 20)


def test_send_buffers_are_kept_and_the_average_written_in_place() -> None:
    torch = pytest.importorskip("torch")
    params, reducer = _reducer_of_two_parameters(torch, _TwinRanks(torch))
    kept = []
    for seed in range(2):
        generator = torch.Generator().manual_seed(seed)
        grads = [torch.randn(p.shape, generator=generator) for p in params]
        expected = [g.to(torch.bfloat16).float() for g in grads]  # (a + a) / 2, once rounded
        out = reducer.average(grads)
        assert all(o is g for o, g in zip(out, grads, strict=True))  # no new tensors
        assert all(torch.equal(o, e) for o, e in zip(out, expected, strict=True))
        kept.append(dict(reducer.wires))
    assert list(kept[0]) == [(0, 2)]
    assert kept[1][0, 2] is kept[0][0, 2]  # the second step sent from the same buffer


def test_a_step_that_failed_midway_gets_new_send_buffers() -> None:
    torch = pytest.importorskip("torch")
    params = [torch.nn.Parameter(torch.zeros(4))]
    twins: Any = _TwinRanks(torch)  # what Bf16Torch uses of Horovod
    reducer = Bf16Torch(torch, twins, params, bucket_bytes=1 << 20)
    reducer.before_backward(final=True)
    (params[0] * torch.ones(4)).sum().backward()  # the hook starts bucket 0
    first = reducer.wires[0, 2]
    reducer.before_backward(final=True)  # that step never averaged: its exchange is dropped
    assert (0, 2) not in reducer.wires
    params[0].grad = None
    (params[0] * torch.ones(4)).sum().backward()
    assert reducer.wires[0, 2] is not first
    assert torch.equal(reducer.average([params[0].grad])[0], torch.ones(4))


class _TripletsSummingBf16(_SameGradientsEverywhere):
    """Three ranks, in a Horovod that sums bf16 (its torch library has the bf16 allreduce,
    the MPI controller runs): the allreduce folds this rank's bf16 tensor in three times,
    each partial sum rounded to bf16 as the MPI op rounds it."""

    Sum = "sum"

    def __init__(self, torch: Any) -> None:
        super().__init__(torch)
        self.mpi_ops = SimpleNamespace(mpi_lib=SimpleNamespace(
            horovod_torch_allreduce_async_torch_BFloat16Tensor=object()))
        self.started: list[tuple[str, str]] = []

    def size(self) -> int:
        return 3

    def mpi_enabled(self) -> bool:
        return True

    def allreduce_async_(self, tensor: Any, op: str, name: str) -> Any:
        self.started.append((name, op))
        mine = tensor.float()
        twice = (mine + mine).to(self.torch.bfloat16).float()
        return tensor.copy_((twice + mine).to(self.torch.bfloat16))


def test_three_ranks_take_one_bf16_allreduce_where_horovod_sums_bf16() -> None:
    torch = pytest.importorskip("torch")
    triplets = _TripletsSummingBf16(torch)
    params, reducer = _reducer_of_two_parameters(torch, triplets)
    grads = [torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) for p in params]
    sent = [g.to(torch.bfloat16).float() for g in grads]
    expected = [((s + s).to(torch.bfloat16).float() + s).to(torch.bfloat16).float() / 3
                for s in sent]
    out = reducer.average(grads)
    assert all(o is g for o, g in zip(out, grads, strict=True))  # written in place
    assert all(torch.equal(o, e) for o, e in zip(out, expected, strict=True))
    assert triplets.started == [("hvdtrain.bf16.0.sum", "sum")]  # one collective, a sum
    assert reducer.wires[0, 3].shape == (1, 17)  # one row: no per-rank chunks


def test_horovods_bf16_sum_only_with_our_build_under_mpi() -> None:
    ours = SimpleNamespace(horovod_torch_allreduce_async_torch_BFloat16Tensor=object())
    stock = SimpleNamespace(horovod_torch_allreduce_async_torch_FloatTensor=object())

    def hvd(lib: Any, mpi: bool) -> Any:
        return SimpleNamespace(mpi_ops=SimpleNamespace(mpi_lib=lib), mpi_enabled=lambda: mpi)

    assert native_bf16_sum(hvd(ours, mpi=True))
    assert not native_bf16_sum(hvd(ours, mpi=False))  # Gloo: no bf16 kernel
    assert not native_bf16_sum(hvd(stock, mpi=True))  # a stock Horovod
    assert not native_bf16_sum(SimpleNamespace(size=lambda: 3))  # no torch library at all
