"""Benchmark: Horovod allreduce bandwidth, MPI controller vs Gloo, 2 ranks, same run.

Why it exists: ``--launcher auto`` picks mpirun + MPI over horovodrun + Gloo. This measures
that choice on the machine at hand instead of trusting a number from elsewhere. Both
controllers are timed in the same invocation (each the other's baseline); medians of
repeated timings are reported, and the ratio is what to read on a shared, noisy machine.

    .venv/bin/python scripts/bench_allreduce_controllers.py [--sizes-mb 1 4 16 64] [--repeats 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rank_main(out_dir: Path, sizes_mb: list[float], repeats: int) -> None:
    import horovod.torch as hvd
    import torch

    hvd.init()
    results = {}
    for size_mb in sizes_mb:
        tensor = torch.ones(int(size_mb * 1024 * 1024 / 4), dtype=torch.float32)
        for _ in range(3):  # warm-up (fusion buffers, connections)
            hvd.allreduce(tensor, op=hvd.Sum, name=f"warm.{size_mb}")
        timings = []
        for i in range(repeats):
            start = time.perf_counter()
            hvd.allreduce(tensor, op=hvd.Sum, name=f"bench.{size_mb}.{i}")
            timings.append(time.perf_counter() - start)
        seconds = statistics.median(timings)
        # ring allreduce moves 2(n-1)/n of the data per rank: the usual "bus bandwidth"
        bus = 2 * (hvd.size() - 1) / hvd.size() * size_mb / 1024 / seconds
        results[f"{size_mb:g}"] = {"median_s": seconds, "bus_gb_s": bus}
    if hvd.rank() == 0:
        (out_dir / "result.json").write_text(json.dumps(results))


def run_controller(args: list[str], sizes: list[float], repeats: int) -> dict[str, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "hvdtrain", "launch", "-np", "2", *args,
               "--run-dir", str(Path(tmp) / "run"), "--", sys.executable, __file__,
               "--rank", tmp, "--repeats", str(repeats), "--sizes-mb", *map(str, sizes)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return json.loads((Path(tmp) / "result.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--rank", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank:
        rank_main(args.rank, args.sizes_mb, args.repeats)
        return
    mpi = run_controller(["--launcher", "mpirun"], args.sizes_mb, args.repeats)
    gloo = run_controller(["--launcher", "horovodrun", "--controller", "gloo"], args.sizes_mb,
                          args.repeats)
    print(f"{'size MB':>8}  {'MPI GB/s':>9}  {'Gloo GB/s':>9}  {'MPI/Gloo':>8}")
    for size in (f"{s:g}" for s in args.sizes_mb):
        m, g = mpi[size]["bus_gb_s"], gloo[size]["bus_gb_s"]
        print(f"{float(size):>8g}  {m:>9.2f}  {g:>9.2f}  {m / g:>7.1f}x")


if __name__ == "__main__":
    main()
