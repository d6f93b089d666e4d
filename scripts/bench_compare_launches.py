"""Benchmark: one ``hvdtrain`` command under several launch settings, alternated.

Why it exists: some settings only take effect when the ranks start (the memory allocator,
Horovod's cycle time and fusion buffer, the controller), so they cannot be interleaved inside
one process the way ``bench train`` interleaves its contenders. This runs the same bench
command once per variant, variant after variant, ``--repeats`` times, and reports per
measurement the median of each variant and each variant's speed against the first one as the
median (min–max) of the ratios of launches that ran back to back: the first variant is the
baseline, measured in the same run.

    .venv/bin/python scripts/bench_compare_launches.py --repeats 3 \\
        --variant glibc "HVDTRAIN_ALLOCATOR=system" --variant tcmalloc "" \\
        -- bench allreduce -np 2 --sizes 16M,64M

    .venv/bin/python scripts/bench_compare_launches.py --repeats 3 \\
        --variant 1ms "--cycle-time-ms 1" --variant 0.1ms "--cycle-time-ms 0.1" \\
        -- bench train -np 2 --launches 1 --rounds 5

    .venv/bin/python scripts/bench_compare_launches.py --repeats 5 \\
        --variant 1ms "" --variant 0.5ms "--cycle-time-ms 0.5" -- train -np 2

The command after ``--`` is ``bench allreduce ...``, ``bench train ...`` (their ``--json``
output is read) or ``train ...``, a real training run (its ``metrics.jsonl``: the median
training samples/s of the epochs after the first, and the wall time).

A variant is a name and a string of ``NAME=VALUE`` environment settings and extra flags for
the bench command (split like a shell would). ``--json`` prints the raw per-launch values too.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HVDTRAIN = Path(sys.executable).with_name("hvdtrain")


def parse_variant(name: str, spec: str) -> tuple[str, dict[str, str], list[str]]:
    env: dict[str, str] = {}
    flags: list[str] = []
    for token in shlex.split(spec):
        key, sep, value = token.partition("=")
        # an environment name starts with a capital (Open MPI's are OMPI_MCA_lower_case)
        if sep and key.isidentifier() and key[0].isupper() and not flags:
            env[key] = value
        else:
            flags.append(token)
    return name, env, flags


def measurements(result: dict[str, Any]) -> dict[str, tuple[float, bool]]:
    """One bench command's ``--json`` output as {label: (value, higher_is_better)}."""
    values: dict[str, tuple[float, bool]] = {}
    if "rows" in result:  # bench allreduce: seconds per size, dtype and compression
        for row in result["rows"]:
            size = f"{row['bytes'] / 2**20:g}M" if row["bytes"] >= 2**20 else f"{row['bytes']}B"
            label = f"allreduce {size} {row['dtype']} {row['compression']} (ms)"
            values[label] = (row["hvdtrain"]["seconds"] * 1e3, False)
            if "mpi" in row and row["compression"] == "none":
                values[f"raw MPI {size} {row['dtype']} (ms)"] = (row["mpi"]["seconds"] * 1e3,
                                                                 False)
        return values
    for ranks, entry in result.items():  # bench train: samples/s per contender and rank count
        for name, contender in entry["contenders"].items():
            values[f"{name} @{ranks} (samples/s)"] = (contender["samples_per_second"], True)
    return values


def training_measurements(run_dir: Path) -> dict[str, tuple[float, bool]]:
    """A ``train`` run: median training samples/s of the epochs after the first (warm-up),
    and its wall time."""
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if line.strip()]
    speeds = [e["samples_per_second"] for e in epochs[1:] or epochs]
    wall = json.loads((run_dir / "summary.json").read_text())["wall_seconds"]
    return {"train samples/s (median epoch)": (statistics.median(speeds), True),
            "train wall (s)": (wall, False)}


def run_once(command: list[str], env: dict[str, str],
             flags: list[str]) -> dict[str, tuple[float, bool]]:
    with tempfile.TemporaryDirectory(prefix="hvdtrain-compare-") as tmp:
        training = command[0] == "train"
        extra = ["--run-dir", str(Path(tmp) / "run")] if training else ["--json"]
        argv = [str(HVDTRAIN), *command, *flags, *extra]
        done = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True,
                              timeout=1800, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-5:])
            sys.exit(f"{shlex.join(argv)} failed ({done.returncode}):\n{tail}")
        if training:
            return training_measurements(Path(tmp) / "run")
        return measurements(json.loads(done.stdout[done.stdout.index("{"):]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "SETTINGS"),
                        required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    bench_args = [a for a in args.bench_args if a != "--"]
    if (len(args.variant) < 2 or args.repeats < 1 or not bench_args
            or bench_args[0] not in ("bench", "train")):
        parser.error("give two variants or more, --repeats >= 1, and after -- a command: "
                     "'bench allreduce ...', 'bench train ...' or 'train ...'")
    variants = [parse_variant(name, spec) for name, spec in args.variant]
    # runs[variant][repeat] = {label: (value, higher_is_better)}
    runs: dict[str, list[dict[str, tuple[float, bool]]]] = {name: [] for name, _, _ in variants}
    for repeat in range(args.repeats):
        for name, env, flags in variants:
            print(f"[{repeat + 1}/{args.repeats}] {name}", file=sys.stderr, flush=True)
            runs[name].append(run_once(bench_args, env, flags))
    names = [name for name, _, _ in variants]
    base = names[0]
    labels = list(runs[base][0])
    lines = [f"hvdtrain {shlex.join(bench_args)}: {args.repeats} repeats, variants "
             "alternated; 'vs base' = speed against the first variant, median (min-max) of "
             "back-to-back launch pairs (> 1: faster)"]
    header = ["measurement", *names, *(f"{n} vs {base}" for n in names[1:])]
    rows = []
    for label in labels:
        higher = runs[base][0][label][1]
        medians = [statistics.median(r[label][0] for r in runs[n]) for n in names]
        ratios = []
        for other in names[1:]:
            pairs = [(o[label][0] / b[label][0]) if higher else (b[label][0] / o[label][0])
                     for b, o in zip(runs[base], runs[other], strict=True)]
            ratios.append(f"{statistics.median(pairs):.2f} ({min(pairs):.2f}-{max(pairs):.2f})")
        rows.append([label, *(f"{m:,.1f}" for m in medians), *ratios])
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    for row in [header, ["-" * w for w in widths], *rows]:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    print("\n".join(lines))
    if args.json:
        print(json.dumps({n: [{k: v[0] for k, v in r.items()} for r in runs[n]] for n in names},
                         indent=2))


if __name__ == "__main__":
    main()
