"""bf16's bucket layout (``comm.torch_compression.bucket_layout``): gradients in backward order
(the reverse of the parameters'), each bucket closed once it reaches its byte budget; and
``Bf16Torch``'s buffers: each bucket sends from one bf16 buffer it keeps, and the average is
written into the gradients it was given."""

from __future__ import annotations

from typing import Any

import pytest

from hvdtrain.comm.torch_compression import BUCKET_BYTES, Bf16Torch, bucket_layout


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


class _TwinRanks:
    """Two ranks with the same gradients: the allgather returns this rank's bytes twice."""

    def __init__(self, torch: Any) -> None:
        self.torch = torch

    def size(self) -> int:
        return 2

    def allgather_async(self, tensor: Any, name: str | None = None) -> Any:
        return self.torch.cat([tensor, tensor])

    def synchronize(self, handle: Any) -> Any:
        return handle


def test_send_buffers_are_kept_and_the_average_written_in_place() -> None:
    torch = pytest.importorskip("torch")
    params = [torch.nn.Parameter(torch.zeros(3, 4)), torch.nn.Parameter(torch.zeros(5))]
    twins: Any = _TwinRanks(torch)  # what Bf16Torch uses of Horovod
    reducer = Bf16Torch(torch, twins, params, bucket_bytes=1 << 20)
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
