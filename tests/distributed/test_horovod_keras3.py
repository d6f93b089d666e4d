"""Horovod's own TensorFlow API on Keras 3, as our build fixes it (issues 15 and 26,
horovod#4290).

Every test runs a rank script under ``hvdtrain launch -np 2`` and checks numbers the ranks
report: gradients equal to the average of the ranks' local ones, identical weights although
each rank is fed different data (true only if gradients are averaged), accuracy like 1 rank.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.helpers.jobs import REPO, hvdtrain, run_job

pytest.importorskip("horovod.tensorflow")
FIXTURES = REPO / "tests" / "fixtures" / "horovod_keras3"


def _launch(tmp_path: Path, script: str, *args: str, np: int = 2,
            timeout: float = 420) -> list[dict]:
    out = tmp_path / f"out-np{np}-{'-'.join(args) or 'run'}"
    out.mkdir()
    done = run_job(hvdtrain("launch", "-np", str(np), "--run-dir", str(out / "run"), "--",
                            sys.executable, str(FIXTURES / script), str(out), *args),
                   timeout=timeout, PYTHONPATH=str(REPO))
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(np)]


def test_tape_broadcast_and_optimizer_average_keras3_gradients(tmp_path: Path) -> None:
    ranks = _launch(tmp_path, "tape_loop.py")
    assert {r["size"] for r in ranks} == {2}
    assert ranks[0]["embedding_grad_sparse"]  # the IndexedSlices (allgather) path was used
    for r in ranks:
        checks = r["checks"]
        for name in ("tape", "tape_sparse_as_dense", "tape_op_sum", "tape_step_update",
                     "tape_register_local_source", "partial_tape_local_layers",
                     "distributed_optimizer_tf_function", "elastic_restore"):
            assert checks[name] < 1e-5, (name, checks[name])
        for name in ("tape_fp16", "tape_safe_fp16", "tape_safe_fp16_sum"):
            assert checks[name] < 5e-3, (name, checks[name])  # fp16 rounding only
        fp16 = r["fp16_values"]
        assert fp16["horovod_fp16_40000"] == float("inf")  # what SafeFP16 is for
        assert fp16["safe_fp16_40000"] == pytest.approx(40000.0, rel=1e-3)
        assert fp16["safe_fp16_200000"] == pytest.approx(200000.0, rel=1e-6)  # fp32 redo
        assert r["optimizer_iterations"] == 4
    # broadcast at the start, averaged updates, elastic sync at the end: one set of weights
    assert ranks[0]["weights"] == ranks[1]["weights"]


def test_model_fit_with_distributed_optimizer_and_callbacks_on_digits(tmp_path: Path) -> None:
    different = _launch(tmp_path, "fit_digits.py", "different")
    one_rank = _launch(tmp_path, "fit_digits.py", "same", np=1)[0]
    first, second = different
    for phase in ("fit", "bpps2", "load_model"):
        # each rank saw only its own shard: identical weights prove the averaging
        assert first[phase]["weights"] == second[phase]["weights"], phase
    fit = first["fit"]
    assert fit["optimizer_class"] == "Adam"  # saved under the wrapped optimizer's name
    assert fit["iterations"] == 12 * 22
    assert first["fit"]["loss"] == second["fit"]["loss"]  # MetricAverageCallback
    lr = fit["lr"]  # warm-up from lr/size to lr over 3 epochs, then halved from epoch 8
    assert lr[0] < lr[1] < lr[2] == pytest.approx(0.004, rel=0.02)
    assert lr[8:] == pytest.approx([0.004, 0.002, 0.001, 0.0005], rel=1e-4)
    assert fit["accuracy"] > 0.9 and one_rank["fit"]["accuracy"] > 0.9
    assert abs(fit["accuracy"] - one_rank["fit"]["accuracy"]) < 0.05
    assert first["bpps2"]["iterations"] == first["bpps2"]["steps"] // 2
    loaded = first["load_model"]
    assert loaded["distributed"] and loaded["iterations_before"] == 12 * 22
    assert loaded["plain_optimizer"] == "Adam" and loaded["accuracy"] > 0.9


def test_the_classic_synthetic_benchmark_pattern_runs_on_keras3(tmp_path: Path) -> None:
    """Horovod's TF2 example pattern (a keras.applications model, DistributedGradientTape in a
    tf.function, broadcast of the model's and optimizer's variables after the first step), as
    the project's own script: set-up fetches nothing from outside the package registries."""
    iters, per_iter, warmup = 2, 1, 1
    ranks = _launch(tmp_path, "synthetic_benchmark.py", "--model", "MobileNet",
                    "--batch-size", "4", "--image-size", "96",
                    "--num-warmup-batches", str(warmup), "--num-batches-per-iter",
                    str(per_iter), "--num-iters", str(iters))
    first, second = ranks
    assert first["size"] == second["size"] == 2
    assert first["steps"] == 1 + warmup + iters * per_iter + 1
    assert first["img_sec"] > 0 and first["loss"] == first["loss"]  # not NaN
    # different initial weights and data per rank: equal only by broadcast and averaging
    assert first["trainable_sums"] == second["trainable_sums"]


def _flat(values: list) -> list[float]:
    return [v for row in values for v in row]


def test_the_rest_of_horovods_keras_api_on_keras3(tmp_path: Path) -> None:
    """Issue 26: what Horovod's own Keras tests cover, in Keras 3 spelling, in one launch."""
    ranks = _launch(tmp_path, "keras_api.py")
    first, second = ranks
    size = first["size"]
    assert size == second["size"] == 2
    mean_rank1 = sum(r + 1 for r in range(size)) / size  # the average of the ranks' (r + 1)

    # BroadcastGlobalVariablesCallback(local_variables=<Keras 3 variables>): the local layer
    # keeps each rank's own constant, everything else takes the root's (rank 1, not 0).
    root = first["broadcast"]["root"]
    assert root == size - 1
    for rank, result in enumerate(ranks):
        assert set(_flat(result["broadcast"]["local"])) == {float(rank)}
        assert set(_flat(result["broadcast"]["frozen"])) == {float(root)}
    assert first["broadcast"]["head"] == second["broadcast"]["head"]

    # sparse_as_dense with an Embedding: train_on_batch applied the average exactly; fit on
    # different data per rank leaves identical weights.
    for result in ranks:
        assert result["sparse_as_dense"]["train_on_batch"] < 1e-6
        assert result["sparse_as_dense"]["iterations"] == 1 + 2
    assert first["sparse_as_dense"]["weights"] == second["sparse_as_dense"]["weights"]

    # backward_passes_per_step with local variables: SGD(1.0) subtracts, every `passes`
    # steps, the gradients summed over those steps; local ones stay on their rank (and are
    # divided by the size, as Horovod does), shared ones are averaged.
    for rank, result in enumerate(ranks):
        agg = result["aggregation_local_vars"]
        passes = agg["passes"]
        for step, seen in enumerate(agg["trace"]):
            summed = (step + 1) // passes * passes  # passes that reached an update
            assert seen["iterations"] == (step + 1) // passes
            assert seen["x"] == pytest.approx([-summed / size, -summed])
            assert _flat(seen["y"]) == pytest.approx([1 + summed * (rank + 1) / size, 2.0,
                                                      1 + summed * mean_rank1, 2.0])
        assert agg["pending"] == len(agg["trace"]) % passes
    assert first["aggregation_local_vars"]["trace"][-1]["y"][0] != (
        second["aggregation_local_vars"]["trace"][-1]["y"][0])

    # An inf gradient in the first cycle reaches that update only; the accumulators are
    # cleared and the next cycle's update is exact.
    for result in ranks:
        inf = result["aggregation_inf"]
        assert inf["first_cycle"]["a"] == float("-inf") and inf["first_cycle"]["b"] == -1.0
        assert inf["first_cycle"]["accumulators"] == [0.0, 0.0]
        assert (inf["a"], inf["b"], inf["iterations"]) == (-1.0, -3.0, 2)

    # PartialDistributedOptimizer under fit: one step exactly as expected, then the local
    # layer differs between ranks while the shared one does not.
    assert first["partial"]["one_step"] < 1e-6 and second["partial"]["one_step"] < 1e-6
    assert first["partial"]["shared"] == second["partial"]["shared"]
    assert first["partial"]["mine"] != second["partial"]["mine"]

    # Warm-up over 2 epochs (per batch, from lr/size), then x0.1 per epoch for 2 epochs, then
    # a callable multiplier (lr * epoch); steps per epoch found by the callbacks.
    lr = first["lr_schedule"]
    lr0, steps = lr["initial_lr"], lr["steps_per_epoch"]
    want = []
    for epoch in range(6):
        for batch in range(steps):
            if epoch < 2:
                at = epoch + (batch + 1) / steps
                want.append(lr0 / size * (at * (size - 1) / 2 + 1))
            elif epoch < 4:
                want.append(lr0 * 0.1 ** (epoch - 2))
            else:
                want.append(lr0 * epoch)
    assert lr["per_batch"] == pytest.approx(want, rel=1e-5)
    assert lr["per_epoch"] == pytest.approx(want[steps - 1::steps], rel=1e-5)
    assert second["lr_schedule"]["per_batch"] == lr["per_batch"]

    # from_config, on the instance and on the class: same config, still distributed (with
    # backward_passes_per_step=2: no update after one pass, the averaged sum after two).
    for result in ranks:
        checks = result["from_config"]
        assert checks["adam_same_config"]
        for name in ("copy0", "copy1"):
            copy = checks[name]
            assert copy["same_config"] and copy["class"] == "SGD"
            assert copy["after_first"] == 0.0
            assert copy["after_second"] == pytest.approx(-2 * mean_rank1)
