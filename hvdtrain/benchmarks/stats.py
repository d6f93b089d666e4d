"""Paired statistics for ``bench train``: noise this machine has (±10 % run to run) cancels
in ratios taken within one round of one launch, and in scaling taken between launches that
ran back to back, far better than in ratios of separately taken medians.

Pure functions (stdlib only): the ranks use ``rotated``, the command the rest.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def rotated(items: Sequence[T], round_index: int) -> list[T]:
    """The contender order of round ``round_index``: it starts at item ``round_index mod k``,
    so no contender always runs first after the barrier (or last, before the next)."""
    if not items:
        return []
    start = round_index % len(items)
    return [*items[start:], *items[:start]]


def paired_ratios(a_windows: Sequence[float], b_windows: Sequence[float]) -> list[float]:
    """Speed of a over b in each round: ``b_time / a_time`` of the same round of the same
    launch (both windows train the same samples, so the ratio of speeds is that of times)."""
    if len(a_windows) != len(b_windows):
        raise ValueError(f"unpaired windows: {len(a_windows)} vs {len(b_windows)}")
    return [b / a for a, b in zip(a_windows, b_windows, strict=True)]


def summary(values: Sequence[float]) -> dict[str, Any]:
    """``{"median", "min", "max", "n"}``: the spread is shown, not hidden in a mean."""
    if not values:
        raise ValueError("summary of no values")
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def scaling_pairs(one_rank: Sequence[float], many_ranks: Sequence[float],
                  ranks: int) -> list[float]:
    """Scaling efficiency per launch pair: launch i at N ranks against launch i at 1 rank
    (they ran back to back), ``thr_N[i] / (N × thr_1[i])``."""
    if len(one_rank) != len(many_ranks):
        raise ValueError(f"unpaired launches: {len(one_rank)} vs {len(many_ranks)}")
    return [many / (ranks * one) for one, many in zip(one_rank, many_ranks, strict=True)]


# what every contender is compared with, where they ran (DDP with its bf16 / PowerSGD hooks:
# the anchors of hvdtrain's own bf16 and powersgd)
BASELINES = ("horovod", "ddp", "ddp-bf16", "ddp-powersgd")


def baselines(contenders: Sequence[str]) -> list[str]:
    """The baselines present; with a compressed contender (``--with-fp16``,
    ``--with-compression``) plain hvdtrain is one too, so the table shows what compression
    buys, and so is hvdtrain with dense embedding gradients (``--with-dense-embeddings``)."""
    compressed = any(c.startswith("hvdtrain-") for c in contenders)
    extra = ["hvdtrain"] if compressed and "hvdtrain" in contenders else []
    extra += ["hvdtrain-dense"] if "hvdtrain-dense" in contenders else []
    return [*extra, *(b for b in BASELINES if b in contenders)]


def combine_launches(runs: dict[int, list[dict[str, Any]]],
                     link: str) -> dict[int, dict[str, Any]]:
    """The launches of ``bench train`` (rank count → one result per launch, in launch order)
    as one result per rank count: per contender the median samples/s over launches and each
    launch's; at the largest rank count also ``ratios`` (per baseline, the summary of the
    per-round paired ratios of all its launches) and, above 1 rank, ``scaling`` (the summary
    over launch pairs)."""
    merged: dict[int, dict[str, Any]] = {}
    for size, results in runs.items():
        if not results:
            continue
        merged[size] = {**results[0], "link": link, "contenders": {
            name: {"samples_per_second": statistics.median(
                r["contenders"][name]["samples_per_second"] for r in results),
                "per_launch": [r["contenders"][name]["samples_per_second"] for r in results]}
            for name in results[0]["contenders"]}}
    if not merged:
        return merged
    many = max(merged)
    contenders = merged[many]["contenders"]
    for name, entry in contenders.items():
        entry["ratios"] = {
            base: summary([ratio for r in runs[many] for ratio in paired_ratios(
                r["contenders"][name]["windows_s"], r["contenders"][base]["windows_s"])])
            for base in baselines(contenders)}
        if many > 1 and 1 in merged:
            entry["scaling"] = summary(scaling_pairs(
                merged[1]["contenders"][name]["per_launch"], entry["per_launch"], many))
    return merged
