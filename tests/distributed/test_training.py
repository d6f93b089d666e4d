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
