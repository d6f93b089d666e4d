"""``--sparse-embeddings``: the byte rule (``comm.sparse_rows``) and how the torch helpers apply
it (``frameworks.torch.sparse_embeddings``), without Horovod: simulated ranks whose touched
rows, gathered and added, must equal the dense average."""

from __future__ import annotations

import pytest

from hvdtrain.comm.sparse_rows import choose, dense_ring_bytes, touched_rows_bytes
from hvdtrain.config import TrainConfig
from hvdtrain.errors import ConfigError


def test_bytes_of_the_two_ways() -> None:
    # 2 ranks: a ring allreduce sends the whole matrix once; rows carry an 8-byte index
    assert dense_ring_bytes(1000, 10, 2) == 1000 * 10 * 4
    assert touched_rows_bytes(50, 10, 2) == 50 * (40 + 8)
    assert dense_ring_bytes(1000, 10, 1) == 0.0  # nothing is sent on one rank
    assert touched_rows_bytes(50, 10, 4) == 3 * 50 * 48


def test_auto_takes_rows_only_when_they_are_clearly_fewer_bytes() -> None:
    bert = dict(rows=30522, width=256)
    assert choose("auto", touched=16 * 128, world=2, **bert).sparse  # 4 MiB against 30 MiB
    assert choose("auto", touched=16 * 128, world=8, **bert).sparse
    assert not choose("auto", touched=16 * 128, world=64, **bert).sparse  # the ring wins again
    assert not choose("auto", touched=16 * 128, world=1, **bert).sparse  # nothing to send
    assert not choose("auto", rows=200, width=32, touched=2048, world=2).sparse  # all rows
    # the explicit modes ignore the bytes
    assert choose("on", rows=200, width=32, touched=2048, world=1).sparse
    assert not choose("off", touched=16, world=2, **bert).sparse
    described = choose("auto", touched=16 * 128, world=2, **bert).describe()
    assert "30522×256" in described and "2048 rows" in described and "MiB" in described


def test_on_is_refused_for_tensorflow() -> None:
    with pytest.raises(ConfigError, match="--sparse-embeddings on is for --framework torch"):
        TrainConfig(framework="tensorflow", sparse_embeddings="on")
    with pytest.raises(ConfigError, match="--sparse-embeddings"):
        TrainConfig(sparse_embeddings="sometimes")
    TrainConfig(framework="tensorflow", sparse_embeddings="auto")  # auto: dense there


def test_torch_embeddings_chosen_and_their_rows_average_exactly() -> None:
    torch = pytest.importorskip("torch")
    from hvdtrain.frameworks.torch.sparse_embeddings import (
        densify,
        empty_gradient,
        make_sparse,
        sparse_parameters,
    )

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.words = torch.nn.Embedding(1000, 8)
            self.frozen = torch.nn.Embedding(1000, 8)
            self.frozen.weight.requires_grad_(False)
            self.tied = torch.nn.Embedding(1000, 8)
            self.head = torch.nn.Linear(8, 1000, bias=False)
            self.head.weight = self.tied.weight  # an LM head sharing the embedding

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            hidden = self.words(ids) + self.frozen(ids) + self.tied(ids)
            return self.head(hidden).sum(-1)

    torch.manual_seed(0)
    net = Net()
    decided = dict(make_sparse(torch, net, "auto", touched=10, world=2))
    assert set(decided) == {"words"} and decided["words"].sparse
    assert sparse_parameters(net) == [net.words.weight]
    assert not net.tied.sparse and not net.frozen.sparse

    # two simulated ranks: their gathered rows, averaged, are the dense average
    dense_grads, sparse_grads = [], []
    for rank in range(2):
        ids = torch.randint(0, 1000, (3, 4), generator=torch.Generator().manual_seed(rank))
        for sparse in (False, True):
            net.words.sparse = sparse
            net.zero_grad(set_to_none=True)
            net(ids).sum().backward()
            grad = net.words.weight.grad
            assert grad.is_sparse == sparse
            (sparse_grads if sparse else dense_grads).append(grad.coalesce() if sparse else grad)
    gathered = torch.sparse_coo_tensor(
        torch.cat([g.indices() for g in sparse_grads], 1),
        torch.cat([g.values() / 2 for g in sparse_grads]), (1000, 8), check_invariants=False)
    net.words.weight.grad = gathered
    densify([net.words.weight])
    assert not net.words.weight.grad.is_sparse
    assert torch.allclose(net.words.weight.grad, (dense_grads[0] + dense_grads[1]) / 2,
                          atol=1e-6)
    net.words.weight.grad = gathered
    densify([net.words.weight], divide_by=2.0)  # Horovod summed (fp16's op)
    assert torch.allclose(net.words.weight.grad, (dense_grads[0] + dense_grads[1]) / 4,
                          atol=1e-6)

    empty = empty_gradient(torch, net.words.weight)
    assert empty.is_sparse and empty.shape == (1000, 8) and empty.coalesce().values().numel() == 0
