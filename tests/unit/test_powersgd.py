"""PowerSGD's math (``comm.powersgd``) on simulated ranks: NumPy, a fake allreduce, no Horovod."""

from __future__ import annotations

import numpy as np
import pytest

from hvdtrain.cluster import estimate as est
from hvdtrain.comm.powersgd import (
    NUMPY_OPS,
    Plan,
    decode,
    encode,
    initial_qs,
    powersgd_round,
)


def lockstep(grads_per_rank: list[list[np.ndarray]], errors: list[list[np.ndarray]],
             qs: list[np.ndarray], plan: Plan) -> list[tuple[list[np.ndarray], ...]]:
    """Every simulated rank's round, their allreduces averaged across them in lockstep."""
    rounds = [powersgd_round(g, e, qs, plan, NUMPY_OPS)
              for g, e in zip(grads_per_rank, errors, strict=True)]
    wanted = [next(r) for r in rounds]
    while True:
        averaged = [np.mean(parts, axis=0) for parts in zip(*wanted, strict=True)]
        results, wanted = [], []
        for r in rounds:
            try:
                wanted.append(r.send([a.copy() for a in averaged]))
            except StopIteration as done:
                results.append(done.value)
        if results:
            assert len(results) == len(rounds)
            return results


def test_full_rank_reproduces_the_average() -> None:
    rng = np.random.default_rng(0)
    shapes = [(6, 4), (3, 5, 2), (7,), (4, 9)]
    for ranks in (1, 2, 3):
        # rank >= min(n, m) of every matrix (r is clamped to it)
        plan = Plan(tuple(shapes), tuple((s[0], int(np.prod(s[1:])),
                                          min(s[0], int(np.prod(s[1:])))) if len(s) > 1
                                         else None for s in shapes))
        grads = [[rng.standard_normal(s) for s in shapes] for _ in range(ranks)]
        errors = [[np.zeros((n, m)) for n, m, _ in plan.compressed_layouts]] * ranks
        results = lockstep(grads, errors, initial_qs(plan, 1), plan)
        truth = [np.mean(parts, axis=0) for parts in zip(*grads, strict=True)]
        for out, _, _ in results:
            for got, want in zip(out, truth, strict=True):
                assert got.shape == want.shape
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        # identical on every rank, bit for bit
        for out, _, _ in results[1:]:
            for a, b in zip(out, results[0][0], strict=True):
                assert np.array_equal(a, b)


def test_error_feedback_defers_what_compression_loses() -> None:
    """Over steps, the applied gradients plus the ranks' mean error are the sum of the true
    average gradients: nothing lost, only delayed."""
    rng = np.random.default_rng(1)
    shapes = [(32, 24), (24,), (16, 16)]
    plan = Plan.of(shapes, 2)
    assert plan.compressed == [0, 2] and plan.uncompressed == [1]
    ranks = 2
    errors = [[np.zeros((n, m)) for n, m, _ in plan.compressed_layouts] for _ in range(ranks)]
    qs = initial_qs(plan, 7)
    applied = [np.zeros(s) for s in shapes]
    true = [np.zeros(s) for s in shapes]
    lossy = False
    for _ in range(6):
        grads = [[rng.standard_normal(s) for s in shapes] for _ in range(ranks)]
        results = lockstep(grads, errors, qs, plan)
        errors = [r[1] for r in results]
        qs = results[0][2]
        for k, parts in enumerate(zip(*grads, strict=True)):
            true[k] += np.mean(parts, axis=0)
            applied[k] += results[0][0][k]
            lossy = lossy or not np.allclose(results[0][0][k], np.mean(parts, axis=0))
    assert lossy  # rank 2 of a 32 × 24 matrix does lose something each step
    np.testing.assert_allclose(applied[1], true[1], atol=1e-9)  # the vector: exact
    for k, i in enumerate(plan.compressed):
        mean_error = np.mean([e[k] for e in errors], axis=0).reshape(shapes[i])
        np.testing.assert_allclose(applied[i] + mean_error, true[i], atol=1e-9)


def test_layout_compresses_only_where_bytes_are_saved() -> None:
    assert est.powersgd_layout((10,), 4) is None
    assert est.powersgd_layout((4, 4), 4) is None  # (4+4)·4 ≥ 16
    assert est.powersgd_layout((256, 128), 4) == (256, 128, 4)
    assert est.powersgd_layout((64, 3, 3, 3), 2) == (64, 27, 2)  # conv: n × (rest)
    assert est.powersgd_layout((3, 1000), 8) is None  # r clamps to 3: (1003)·3 ≥ 3000


def test_state_encoding_is_exact() -> None:
    arrays = [np.random.default_rng(2).standard_normal((5, 3)).astype(np.float32),
              np.zeros((0, 2), np.float32)]
    for a, b in zip(decode(encode(arrays)), arrays, strict=True):
        assert a.dtype == np.float32 and np.array_equal(a, b)


def test_powersgd_estimate_counts_factors() -> None:
    shapes = est.mlp_shapes((128, 256, 256, 1))
    first, second = est.powersgd_elements(shapes, 4)
    # 256×128 and 256×256 compressed (P: 256·4 each; Q: 128·4 and 256·4); 1×256 and the
    # biases sent whole
    assert first == 256 * 4 * 2 + 256 + 256 + 256 + 1
    assert second == 128 * 4 + 256 * 4
    e = est.estimate(est.model_parameters("mlp"), 0.01, est.Layout(2, 1),
                     compression="powersgd", shapes=shapes, powersgd_rank=4)
    assert e.gradient_bytes == 4 * (first + second)
    assert e.buffers == 2  # two rounds, one after the other
    bf16 = est.estimate(1000, 0.01, est.Layout(2, 1), compression="bf16")
    assert bf16.gradient_bytes == 2000
    with pytest.raises(Exception, match="shapes"):
        est.estimate(1000, 0.01, est.Layout(2, 1), compression="powersgd")


def test_known_model_shapes_match_their_counts() -> None:
    for name in est.MODEL_SHAPES:
        shapes = est.model_shapes(name)
        assert shapes is not None
        assert sum(int(np.prod(s)) for s in shapes) == est.model_parameters(name), name
    assert est.model_shapes("44.5M") is None


def test_plan_estimate_shows_every_compression() -> None:
    import json

    from click.testing import CliRunner

    from hvdtrain.commands import main

    runner = CliRunner()
    result = runner.invoke(main, ["plan", "-np", "2", "--estimate", "--params", "bench-mlp",
                                  "--compute-ms", "10", "--powersgd-rank", "2", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)["plan"]
    assert set(plan) == {"none", "fp16", "bf16", "powersgd"}
    assert plan["bf16"]["gradient_bytes"] == plan["fp16"]["gradient_bytes"]
    first, second = est.powersgd_elements(est.mlp_shapes((128, 1024, 1024, 1)), 2)
    assert plan["powersgd"]["gradient_bytes"] == 4 * (first + second)
    assert plan["powersgd"]["comm_s"] < plan["bf16"]["comm_s"] < plan["none"]["comm_s"]
    text = runner.invoke(main, ["plan", "-np", "2", "--estimate", "--params", "3M",
                                "--compute-ms", "10"])
    assert text.exit_code == 0 and "powersgd: give a known model" in text.output
