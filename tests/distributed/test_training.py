"""Training through the real launcher, the same acceptance for every framework adapter:
accuracy, identical weights, data-parallel equivalence, overflow-safe fp16, resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hvdtrain.catalog import FRAMEWORKS
from tests.helpers.jobs import REPO, hvdtrain, job_env, read_summary, run_job

USER_MODELS = {"torch": "tests.fixtures.user_models:make_torch",
               "tensorflow": "tests.fixtures.user_models:make_keras"}

# Horovod's own fp16 compression next to ours, on a gradient of 2e5 on every rank.
FP16_SCRIPTS = {
    "torch": textwrap.dedent("""
        import json, os, sys
        import torch
        import horovod.torch as hvd
        from hvdtrain.comm.fp16 import SafeFP16Torch
        hvd.init()
        def step(compression, op, safe=None):
            model = torch.nn.Linear(1, 1, bias=False)
            torch.nn.init.ones_(model.weight)
            opt = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.0),
                                           named_parameters=model.named_parameters(),
                                           compression=compression, op=op)
            opt.zero_grad()
            (model(torch.ones(1, 1)) * 2e5).sum().backward()
            opt.synchronize()
            recovered = safe.recover(model, hvd) if safe else 0
            return model.weight.grad.item(), recovered
        horovod_fp16 = step(hvd.Compression.fp16, hvd.Average)
        safe = SafeFP16Torch(hvd.size())
        ours = step(safe.compressor, hvd.Sum, safe)
        with open(os.path.join(sys.argv[1], f"rank{hvd.rank()}.json"), "w") as f:
            json.dump({"horovod_fp16": repr(horovod_fp16[0]), "safe": ours[0],
                       "recovered": ours[1]}, f)
    """),
    "tensorflow": textwrap.dedent("""
        import json, os, sys
        import tensorflow as tf
        import horovod.tensorflow as hvd
        from hvdtrain.comm.fp16 import tf_allreduce_gradients
        hvd.init()
        grad = tf.constant([2e5])
        theirs = hvd.allreduce(grad, op=hvd.Average, compression=hvd.Compression.fp16)
        ours, recovered = tf.function(
            lambda: tf_allreduce_gradients([grad], hvd, hvd.size(), "fp16"))()
        with open(os.path.join(sys.argv[1], f"rank{hvd.rank()}.json"), "w") as f:
            json.dump({"horovod_fp16": repr(float(theirs[0])), "safe": float(ours[0][0]),
                       "recovered": int(recovered)}, f)
    """),
}


def _train(tmp_path: Path, name: str, framework: str, *args: str,
           np_: str = "2") -> dict[str, object]:
    run_dir = tmp_path / name
    done = run_job(hvdtrain("train", "-np", np_, "--framework", framework, "--run-dir",
                            str(run_dir), *args), cwd=REPO, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    return read_summary(run_dir)


@pytest.mark.parametrize("framework", FRAMEWORKS.names())
def test_default_run_reaches_95_percent_with_identical_weights(tmp_path: Path,
                                                               framework: str) -> None:
    summary = _train(tmp_path, "default", framework)
    assert summary["val_accuracy"] >= 0.95, summary
    assert summary["frameworks_loaded"] == [[framework], [framework]]  # one per process
    assert summary["parameters_identical"] is True
    hashes = summary["parameter_hashes"]
    assert isinstance(hashes, list) and len(hashes) == 2


@pytest.mark.parametrize("framework", FRAMEWORKS.names())
def test_cnn_on_digits(tmp_path: Path, framework: str) -> None:
    summary = _train(tmp_path, "digits", framework, "--model", "cnn", "--data", "digits",
                     "--epochs", "15")
    assert summary["val_accuracy"] >= 0.95, summary
    assert summary["parameters_identical"] is True


@pytest.mark.parametrize("framework", FRAMEWORKS.names())
def test_compressions_within_one_point_of_fp32(tmp_path: Path, framework: str) -> None:
    fp32 = _train(tmp_path, "fp32", framework, "--epochs", "4")
    for compression in ("fp16", "bf16", "powersgd"):
        got = _train(tmp_path, compression, framework, "--epochs", "4", "--compression",
                     compression)
        assert abs(float(fp32["val_accuracy"]) - float(got["val_accuracy"])) <= 0.01, (
            compression, fp32["val_accuracy"], got["val_accuracy"])
        assert got["parameters_identical"] is True, compression
        assert got["compression"] == compression


def test_bf16_at_three_ranks_within_one_point_of_fp32(tmp_path: Path) -> None:
    """Under MPI each bf16 bucket is one allreduce that Horovod sums in bf16 (our build;
    tests/distributed/test_bf16_sum.py checks the sum at 2 and 3 ranks): that path at three
    ranks, on the torch adapter."""
    fp32 = _train(tmp_path, "fp32", "torch", "--epochs", "4", np_="3")
    bf16 = _train(tmp_path, "bf16", "torch", "--epochs", "4", "--compression", "bf16", np_="3")
    assert abs(float(fp32["val_accuracy"]) - float(bf16["val_accuracy"])) <= 0.01
    assert bf16["parameters_identical"] is True and bf16["world_size"] == 3
    assert bf16["parameter_hashes"] != fp32["parameter_hashes"]  # bf16 did round


@pytest.mark.parametrize("framework", FRAMEWORKS.names())
def test_horovod_fp16_overflows_and_ours_recovers(tmp_path: Path, framework: str) -> None:
    script = tmp_path / "fp16.py"
    script.write_text(FP16_SCRIPTS[framework])
    done = run_job(hvdtrain("launch", "-np", "2", "--run-dir", str(tmp_path / "run"), "--",
                            sys.executable, str(script), str(tmp_path)), cwd=REPO)
    assert done.returncode == 0, done.stderr
    for rank in (0, 1):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["horovod_fp16"] == "inf"  # the failure: Horovod's own fp16 + Average
        assert result["safe"] == 2e5  # the fix: exact average, redone in fp32
        assert result["recovered"] == 1  # and counted


@pytest.mark.parametrize("framework", FRAMEWORKS.names())
def test_two_ranks_equal_one_rank_with_double_batch(tmp_path: Path, framework: str) -> None:
    common = ("--epochs", "1", "--lr-scaling", "none", "--val-fraction", "0.25",
              "--record-step-losses", "--checkpoint-every", "0")
    two = _train(tmp_path, "np2", framework, "--batch-size", "64", *common)["step_losses"]
    one = _train(tmp_path, "np1", framework, "--batch-size", "128", *common,
                 np_="1")["step_losses"]
    assert isinstance(two, list) and isinstance(one, list)
    assert len(two) == len(one) == 12288 // 128
    worst = max(abs(a - b) / abs(b) for a, b in zip(two, one, strict=True))
    assert worst <= 1e-5, worst


@pytest.mark.parametrize("framework", FRAMEWORKS.names())
def test_resume_after_kill_equals_uninterrupted(tmp_path: Path, framework: str) -> None:
    # small batches: epochs long enough (hundreds of steps) that the kill lands inside epoch 3
    args = ("--epochs", "4", "--batch-size", "8")
    straight = _train(tmp_path, "straight", framework, *args)
    run_dir = tmp_path / "interrupted"
    proc = subprocess.Popen(hvdtrain("train", "-np", "2", "--run-dir", str(run_dir),
                                     "--framework", framework, *args),
                            env=job_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 200
        while not (run_dir / "checkpoints" / "epoch-0002.ckpt").exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)  # killed during epoch 3
        assert proc.wait(timeout=60) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (run_dir / "summary.json").exists()
    resumed = _train(tmp_path, "interrupted", framework, *args, "--resume", "latest")
    assert resumed["epochs_run"] == 4
    assert resumed["parameter_hashes"] == straight["parameter_hashes"]
    assert (run_dir / "checkpoints" / "best.ckpt").exists()


@pytest.mark.parametrize("framework", FRAMEWORKS.names())
def test_corrupt_checkpoint_is_a_clear_error_and_keeps_the_good_ones(
        tmp_path: Path, framework: str) -> None:
    args = ("--epochs", "2", "--data", "breast-cancer")
    _train(tmp_path, "run", framework, *args)
    checkpoints = tmp_path / "run" / "checkpoints"
    good = {p.name: p.read_bytes() for p in checkpoints.iterdir()}
    (checkpoints / "epoch-0009.ckpt").write_bytes(b"garbage")
    done = run_job(hvdtrain("train", "-np", "2", "--framework", framework, "--run-dir",
                            str(tmp_path / "run"), *args, "--epochs", "12",
                            "--resume", "latest"), timeout=200)
    assert done.returncode != 0
    assert "epoch-0009.ckpt: cannot read checkpoint" in done.stderr
    for name, content in good.items():
        assert (checkpoints / name).read_bytes() == content


@pytest.mark.parametrize("framework", FRAMEWORKS.names())
def test_early_stopping_is_decided_on_every_rank(tmp_path: Path, framework: str) -> None:
    # Adam at 0.01 overfits breast-cancer within a few epochs: val_loss turns up, finitely
    summary = _train(tmp_path, "early", framework, "--data", "breast-cancer", "--epochs", "60",
                     "--lr", "0.01", "--early-stopping-patience", "2")
    assert summary["stopped_early"] is True
    assert int(str(summary["epochs_run"])) < 60
    assert summary["parameters_identical"] is True


@pytest.mark.parametrize("framework", FRAMEWORKS.names())
def test_transformer_on_text_and_a_users_own_model(tmp_path: Path, framework: str) -> None:
    text = _train(tmp_path, "text", framework, "--model", "transformer", "--data",
                  "synthetic-text", "--epochs", "3")
    assert float(str(text["val_accuracy"])) >= 0.75
    user = _train(tmp_path, "user", framework, "--model", USER_MODELS[framework],
                  "--data", "breast-cancer", "--epochs", "5")
    assert float(str(user["val_accuracy"])) >= 0.9
    rows = [json.loads(line) for line in (tmp_path / "user" / "metrics.jsonl").read_text()
            .splitlines()]
    assert len(rows) == 5
    # the event files, read back as TensorBoard reads them: each epoch's metrics at its step
    scalars = _tensorboard_scalars(tmp_path / "user" / "tensorboard")
    for tag in ("train_loss", "val_accuracy", "lr"):
        assert scalars[tag] == [(row["epoch"], pytest.approx(row[tag], rel=1e-6))
                                for row in rows], (tag, scalars[tag])


def _tensorboard_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in ``directory``'s event files, through TensorBoard's own loader (which
    reads tensorboardX's and ``tf.summary``'s alike)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    events = EventAccumulator(str(directory), size_guidance={"tensors": 0})  # 0: keep all
    events.Reload()
    return {tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
                  for e in events.Tensors(tag)]
            for tag in events.Tags()["tensors"]
            if events.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"}


def test_same_command_in_both_frameworks_lands_within_two_points(tmp_path: Path) -> None:
    args = ("--data", "breast-cancer", "--epochs", "8", "--seed", "7")
    accuracy = {fw: float(str(_train(tmp_path, fw, fw, *args)["val_accuracy"]))
                for fw in FRAMEWORKS.names()}
    assert abs(accuracy["torch"] - accuracy["tensorflow"]) <= 0.02, accuracy


def test_grad_accumulation_and_warmup_run_in_both(tmp_path: Path) -> None:
    for framework in FRAMEWORKS.names():
        summary = _train(tmp_path, framework, framework, "--data", "breast-cancer",
                         "--epochs", "3", "--grad-accumulation", "2", "--warmup-epochs", "1",
                         "--optimizer", "adamw", "--weight-decay", "0.01")
        assert summary["parameters_identical"] is True
        assert float(str(summary["val_accuracy"])) >= 0.85


@pytest.mark.parametrize("framework", FRAMEWORKS.names())
def test_sharded_validation_equals_single_process_evaluation(tmp_path: Path,
                                                             framework: str) -> None:
    trained = _train(tmp_path, "run", framework, "--data", "breast-cancer", "--epochs", "3")
    # one process, resumed at the end: it only evaluates the restored model on the whole set
    alone = _train(tmp_path, "run", framework, "--data", "breast-cancer", "--epochs", "3",
                   "--resume", "latest", np_="1")
    assert alone["world_size"] == 1 and alone["epochs_run"] == 3
    for key in ("val_loss", "val_accuracy"):
        a, b = float(str(trained[key])), float(str(alone[key]))
        assert abs(a - b) <= 1e-5 * max(abs(b), 1e-12), (key, a, b)
