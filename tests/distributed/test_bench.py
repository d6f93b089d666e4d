"""Smoke tests of the benchmarks: tiny sizes, both controllers, the baseline in the same run.

Benchmarks are not tests: these only check that each runs end to end and reports its fields.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.jobs import hvdtrain, run_job


@pytest.mark.parametrize(("launch_args", "controller"), [
    (["--launcher", "mpirun"], "mpi"),
    (["--launcher", "horovodrun", "--controller", "gloo"], "gloo"),
])
def test_bench_allreduce_reports_ours_and_the_baseline(launch_args: list[str],
                                                       controller: str,
                                                       tmp_path: Path) -> None:
    plot = tmp_path / "plots" / "allreduce.png"
    done = run_job(hvdtrain("bench", "allreduce", "-np", "2", *launch_args, "--sizes",
                            "4K,64K", "--repeats", "2", "--json", "--plot", str(plot)),
                   timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["ranks"] == 2 and result["controller"] == controller
    assert [(r["bytes"], r["compression"]) for r in result["rows"]] == [
        (4096, "none"), (4096, "fp16"), (65536, "none"), (65536, "fp16")]
    for row in result["rows"]:
        assert row["hvdtrain"]["seconds"] > 0 and row["hvdtrain"]["busbw_gb_s"] > 0
        # raw MPI_Allreduce is the baseline under MPI; Gloo has no MPI to compare with
        assert ("ratio" in row) == (controller == "mpi")
    assert_png(plot)


def assert_png(path: Path) -> None:
    """A real PNG with something drawn on it (an empty 840×540 canvas is ~3 KB)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    assert len(data) > 15_000, len(data)


def test_bench_rejects_bad_sizes() -> None:
    done = run_job(hvdtrain("bench", "allreduce", "--sizes", "4Q"), timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--sizes '4Q'" in done.stderr


def assert_paired_stats(contenders: dict[str, Any], bases: list[str], rounds: int,
                        launches: int) -> None:
    """At the N size: every contender's scaling over launch pairs and its ratios to each
    baseline over all rounds of all launches, medians within their min..max."""
    for name, entry in contenders.items():
        assert entry["scaling"]["n"] == launches, name
        assert sorted(entry["ratios"]) == sorted(bases), name
        for stat in (entry["scaling"], *entry["ratios"].values()):
            assert 0 < stat["min"] <= stat["median"] <= stat["max"], (name, stat)
        for base in bases:
            assert entry["ratios"][base]["n"] == rounds * launches, (name, base)
        if name in bases:
            assert entry["ratios"][name]["median"] == 1.0


def test_bench_train_measures_all_contenders_at_one_and_two_ranks(tmp_path: Path) -> None:
    plot = tmp_path / "train.png"
    done = run_job(hvdtrain("bench", "train", "-np", "2", "--hidden", "32", "--batch-size",
                            "16", "--steps", "2", "--rounds", "2", "--launches", "2", "--json",
                            "--with-fp16", "--plot", str(plot)), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert sorted(result) == ["1", "2"]
    for size in ("1", "2"):
        assert result[size]["ranks"] == int(size)
        assert sorted(result[size]["contenders"]) == ["ddp", "horovod", "hvdtrain",
                                                      "hvdtrain-fp16"]
        assert all(c["samples_per_second"] > 0 and len(c["per_launch"]) == 2
                   for c in result[size]["contenders"].values())
    # with the fp16 contender, plain hvdtrain is a baseline too (what compression buys)
    assert_paired_stats(result["2"]["contenders"], ["ddp", "horovod", "hvdtrain"], rounds=2,
                        launches=2)
    assert_png(plot)


def test_bench_train_tensorflow_against_a_minimal_tf_function_loop() -> None:
    pytest.importorskip("horovod.tensorflow")
    done = run_job(hvdtrain("bench", "train", "--framework", "tensorflow", "-np", "2",
                            "--hidden", "32", "--batch-size", "16", "--steps", "2", "--rounds",
                            "1", "--launches", "1", "--with-fp16", "--json"), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert sorted(result) == ["1", "2"]
    for size in ("1", "2"):
        assert result[size]["framework"] == "tensorflow"
        assert result[size]["ranks"] == int(size)
        assert sorted(result[size]["contenders"]) == ["horovod", "hvdtrain", "hvdtrain-fp16"]
        assert all(c["samples_per_second"] > 0 for c in result[size]["contenders"].values())
    assert_paired_stats(result["2"]["contenders"], ["horovod", "hvdtrain"], rounds=1,
                        launches=1)


def test_bench_overlap_splits_each_contenders_allreduce(tmp_path: Path) -> None:
    plot = tmp_path / "overlap.png"
    done = run_job(hvdtrain("bench", "overlap", "-np", "2", "--hidden", "64", "--batch-size",
                            "16", "--steps", "3", "--json", "--plot", str(plot)), timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["ranks"] == 2 and set(result["contenders"]) == {"hvdtrain", "horovod", "ddp"}
    for name, entry in result["contenders"].items():
        assert len(entry["steps"]) == 3, name
        for overlap in entry["overlaps"]:
            # every step of every contender allreduced (timeline or DDP's buckets) ...
            assert overlap["communication_ms"] > 0, (name, overlap)
            # ... and its communication is split into hidden and exposed, nothing else
            assert overlap["hidden_ms"] + overlap["exposed_ms"] == pytest.approx(
                overlap["communication_ms"]), name
            assert overlap["backward_ms"] <= overlap["step_ms"], name
    assert_png(plot)
