"""Training through the real launcher: accuracy, identical weights, overflow-safe fp16."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

from tests.distributed.conftest import REPO, hvdtrain, run_job

FP16_SCRIPT = textwrap.dedent("""
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
        (model(torch.ones(1, 1)) * 2e5).sum().backward()  # gradient 2e5 on every rank
        opt.synchronize()
        recovered = safe.recover(model, hvd) if safe else 0
        return model.weight.grad.item(), recovered
    horovod_fp16 = step(hvd.Compression.fp16, hvd.Average)
    safe = SafeFP16Torch(hvd.size())
    ours = step(safe.compressor, hvd.Sum, safe)
    with open(os.path.join(sys.argv[1], f"rank{hvd.rank()}.json"), "w") as f:
        json.dump({"horovod_fp16": repr(horovod_fp16[0]), "safe": ours[0],
                   "recovered": ours[1]}, f)
""")


def _train(tmp_path: Path, name: str, *args: str) -> dict[str, object]:
    run_dir = tmp_path / name
    done = run_job(hvdtrain("train", "-np", "2", "--run-dir", str(run_dir), *args), timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((run_dir / "summary.json").read_text())


def test_default_run_reaches_95_percent_with_identical_weights(tmp_path: Path) -> None:
    summary = _train(tmp_path, "default")
    assert summary["val_accuracy"] >= 0.95, summary
    assert summary["parameters_identical"] is True
    hashes = summary["parameter_hashes"]
    assert isinstance(hashes, list) and len(hashes) == 2


def test_cnn_on_digits(tmp_path: Path) -> None:
    summary = _train(tmp_path, "digits", "--model", "cnn", "--data", "digits", "--epochs", "15")
    assert summary["val_accuracy"] >= 0.95, summary
    assert summary["parameters_identical"] is True


def test_fp16_within_one_point_of_fp32(tmp_path: Path) -> None:
    fp32 = _train(tmp_path, "fp32", "--epochs", "4")
    fp16 = _train(tmp_path, "fp16", "--epochs", "4", "--compression", "fp16")
    assert abs(float(fp32["val_accuracy"]) - float(fp16["val_accuracy"])) <= 0.01
    assert fp16["parameters_identical"] is True


def test_horovod_fp16_overflows_and_ours_recovers(tmp_path: Path) -> None:
    script = tmp_path / "fp16.py"
    script.write_text(FP16_SCRIPT)
    done = run_job(hvdtrain("launch", "-np", "2", "--run-dir", str(tmp_path / "run"), "--",
                            sys.executable, str(script), str(tmp_path)), cwd=REPO)
    assert done.returncode == 0, done.stderr
    for rank in (0, 1):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["horovod_fp16"] == "inf"  # the failure: Horovod's own fp16 + Average
        assert result["safe"] == 2e5  # the fix: exact average, redone in fp32
        assert result["recovered"] == 1  # and counted


def test_two_ranks_equal_one_rank_with_double_batch(tmp_path: Path) -> None:
    common = ("--epochs", "1", "--lr-scaling", "none", "--val-fraction", "0.25",
              "--record-step-losses", "--checkpoint-every", "0")
    runs = {}
    for np_, batch in (("2", "64"), ("1", "128")):
        run_dir = tmp_path / f"np{np_}"
        done = run_job(hvdtrain("train", "-np", np_, "--batch-size", batch,
                                "--run-dir", str(run_dir), *common), timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[np_] = json.loads((run_dir / "summary.json").read_text())["step_losses"]
    two, one = runs["2"], runs["1"]
    assert len(two) == len(one) == 12288 // 128
    worst = max(abs(a - b) / abs(b) for a, b in zip(two, one, strict=True))
    assert worst <= 1e-5, worst


def test_resume_after_kill_equals_uninterrupted(tmp_path: Path) -> None:
    import signal
    import subprocess
    import time

    from tests.distributed.conftest import job_env

    args = ("--epochs", "4")
    straight = _train(tmp_path, "straight", *args)

    run_dir = tmp_path / "interrupted"
    proc = subprocess.Popen(hvdtrain("train", "-np", "2", "--run-dir", str(run_dir), *args),
                            env=job_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 200
        while not (run_dir / "checkpoints" / "epoch-0002.ckpt").exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # killed during epoch 3
        assert proc.wait(timeout=60) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (run_dir / "summary.json").exists()
    resumed = _train(tmp_path, "interrupted", *args, "--resume", "latest")
    assert resumed["epochs_run"] == 4
    assert resumed["parameter_hashes"] == straight["parameter_hashes"]
    assert (run_dir / "checkpoints" / "best.ckpt").exists()


def test_corrupt_checkpoint_is_a_clear_error_and_keeps_the_good_ones(tmp_path: Path) -> None:
    args = ("--epochs", "2", "--data", "breast-cancer")
    _train(tmp_path, "run", *args)
    checkpoints = tmp_path / "run" / "checkpoints"
    good = {p.name: p.read_bytes() for p in checkpoints.iterdir()}
    (checkpoints / "epoch-0009.ckpt").write_bytes(b"garbage")
    done = run_job(hvdtrain("train", "-np", "2", "--run-dir", str(tmp_path / "run"), *args,
                            "--epochs", "12", "--resume", "latest"), timeout=200)
    assert done.returncode != 0
    assert "epoch-0009.ckpt: cannot read checkpoint" in done.stderr
    assert "Traceback" not in done.stderr.split("failed first")[-1].split("---")[0]
    for name, content in good.items():
        assert (checkpoints / name).read_bytes() == content


def test_early_stopping_is_decided_on_every_rank(tmp_path: Path) -> None:
    summary = _train(tmp_path, "early", "--data", "breast-cancer", "--epochs", "60",
                     "--optimizer", "sgd", "--lr", "3.0", "--early-stopping-patience", "2")
    assert summary["stopped_early"] is True
    assert int(summary["epochs_run"]) < 60
    assert summary["parameters_identical"] is True


def test_transformer_on_text_and_a_users_own_model(tmp_path: Path) -> None:
    text = _train(tmp_path, "text", "--model", "transformer", "--data", "synthetic-text",
                  "--epochs", "3")
    assert float(text["val_accuracy"]) >= 0.75
    user = run_job(hvdtrain("train", "-np", "2", "--run-dir", str(tmp_path / "user"),
                            "--model", "tests.fixtures.user_models:make_torch",
                            "--data", "breast-cancer", "--epochs", "5"), cwd=REPO, timeout=200)
    assert user.returncode == 0, user.stderr[-3000:]
    summary = json.loads((tmp_path / "user" / "summary.json").read_text())
    assert float(summary["val_accuracy"]) >= 0.9
    assert (tmp_path / "user" / "tensorboard").is_dir()
    assert len((tmp_path / "user" / "metrics.jsonl").read_text().splitlines()) == 5
