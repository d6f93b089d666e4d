"""Smoke tests of the benchmarks: tiny sizes, both controllers, the baseline in the same run.

Benchmarks are not tests: these only check that each runs end to end and reports its fields.
"""

from __future__ import annotations

import json

import pytest

from tests.distributed.conftest import hvdtrain, run_job


@pytest.mark.parametrize(("launch_args", "controller"), [
    (["--launcher", "mpirun"], "mpi"),
    (["--launcher", "horovodrun", "--controller", "gloo"], "gloo"),
])
def test_bench_allreduce_reports_ours_and_the_baseline(launch_args: list[str],
                                                       controller: str) -> None:
    done = run_job(hvdtrain("bench", "allreduce", "-np", "2", *launch_args, "--sizes",
                            "4K,64K", "--repeats", "2", "--json"), timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["ranks"] == 2 and result["controller"] == controller
    assert [(r["bytes"], r["compression"]) for r in result["rows"]] == [
        (4096, "none"), (4096, "fp16"), (65536, "none"), (65536, "fp16")]
    for row in result["rows"]:
        assert row["hvdtrain"]["seconds"] > 0 and row["hvdtrain"]["busbw_gb_s"] > 0
        # raw MPI_Allreduce is the baseline under MPI; Gloo has no MPI to compare with
        assert ("ratio" in row) == (controller == "mpi")


def test_bench_rejects_bad_sizes() -> None:
    done = run_job(hvdtrain("bench", "allreduce", "--sizes", "4Q"), timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--sizes '4Q'" in done.stderr
