"""bf16's bucket layout (``comm.torch_compression.bucket_layout``): gradients in backward order
(the reverse of the parameters'), each bucket closed once it reaches its byte budget."""

from __future__ import annotations

from hvdtrain.comm.torch_compression import BUCKET_BYTES, bucket_layout


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
