"""PNG plots of the benchmark results, for people (the table and ``--json`` are for terminals
and machines).

matplotlib is imported here, inside the functions, and only when ``--plot`` is given: the
benchmarks themselves and ``hvdtrain --help`` never pay for it. The Agg backend draws to a file
without a display, as on a cluster's login node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hvdtrain.errors import ConfigError


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("--plot needs matplotlib",
                          hint="pip install matplotlib (or hvdtrain[ml])") from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_allreduce(result: dict[str, Any], path: Path) -> None:
    """Bus bandwidth against tensor size, one line per dtype/compression for hvdtrain (solid)
    and for raw MPI (dashed, where it was measured); min–max of the timings as a band."""
    from hvdtrain.benchmarks.allreduce import human_size

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in result["rows"]:
        series.setdefault((row["dtype"], row["compression"]), []).append(row)
    ranks = result["ranks"]
    factor = 2 * (ranks - 1) / ranks if ranks > 1 else 1.0
    series_done = False  # the band is named once in the legend
    for (dtype, compression), rows in series.items():
        rows.sort(key=lambda r: r["bytes"])
        sizes = [r["bytes"] for r in rows]
        line = ax.plot(sizes, [r["hvdtrain"]["busbw_gb_s"] for r in rows], marker="o",
                       label=f"hvdtrain {dtype}, compression {compression} (size before "
                       "compression)")[0]
        # spread_s is (fastest, slowest) time: slowest gives the low bandwidth edge
        low = [r["bytes"] / r["spread_s"][1] / 1e9 * factor for r in rows]
        high = [r["bytes"] / r["spread_s"][0] / 1e9 * factor for r in rows]
        ax.fill_between(sizes, low, high, color=line.get_color(), alpha=0.15, linewidth=0,
                        label="min–max of the timings" if not series_done else None)
        series_done = True
        if compression == "none" and all("mpi" in r for r in rows):
            ax.plot(sizes, [r["mpi"]["busbw_gb_s"] for r in rows], linestyle="--",
                    marker="x", color=line.get_color(), label=f"raw MPI_Allreduce {dtype}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ticks = sorted({r["bytes"] for r in result["rows"]})
    ax.set_xticks(ticks, [human_size(t) for t in ticks])
    from matplotlib.ticker import FormatStrFormatter

    for axis in (ax.yaxis,):  # 0.08, not 8×10⁻²
        axis.set_major_formatter(FormatStrFormatter("%g"))
        axis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xlabel("tensor size (bytes)")
    ax.set_ylabel("bus bandwidth (GB/s), 2(n-1)/n × size / time")
    ax.set_title(f"allreduce, {ranks} ranks, {result.get('link', 'this host')}, "
                 f"controller {result['controller']}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)


def plot_train(by_size: dict[int, dict[str, Any]], path: Path) -> None:
    """Aggregate throughput against rank count, one line per contender (median over launches,
    min–max as error bars), and linear scaling from hvdtrain's 1-rank speed for reference."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = sorted(by_size)
    names = list(by_size[sizes[-1]]["contenders"])
    for name in names:
        medians = [by_size[s]["contenders"][name]["samples_per_second"] for s in sizes]
        spreads = [by_size[s]["contenders"][name].get("per_launch", [m])
                   for s, m in zip(sizes, medians, strict=True)]
        errors = [[m - min(p) for m, p in zip(medians, spreads, strict=True)],
                  [max(p) - m for m, p in zip(medians, spreads, strict=True)]]
        ax.errorbar(sizes, medians, yerr=errors, marker="o", capsize=4, label=name)
    if "hvdtrain" in names:
        base = by_size[sizes[0]]["contenders"]["hvdtrain"]["samples_per_second"] / sizes[0]
        ax.plot(sizes, [base * s for s in sizes], linestyle=":", color="grey",
                label="linear scaling of hvdtrain's 1 rank")
    config = by_size[sizes[-1]]["config"]
    framework = by_size[sizes[-1]].get("framework", "torch")
    ax.set_xticks(sizes)
    ax.set_xlabel("ranks")
    ax.set_ylabel("samples/s, aggregate over all ranks")
    ax.set_ylim(bottom=0)
    ax.set_title(f"training throughput, {framework}, MLP {config['features']}→"
                 f"{config['hidden']}→{config['hidden']}→1, batch {config['batch_size']}/rank, "
                 f"controller {by_size[sizes[-1]]['controller']}\n"
                 f"{by_size[sizes[-1]].get('link', 'this host')}", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)


def plot_overlap(result: dict[str, Any], path: Path, steps: int = 3) -> None:
    """Rank 0's last ``steps`` measured steps per contender on one time axis from each
    contender's first shown step: forward+backward compute (grey) above, the allreduce
    network activity (blue where hidden behind backward, red where exposed) below."""
    plt = _pyplot()
    contenders = result["contenders"]
    fig, axes = plt.subplots(len(contenders), 1, figsize=(10, 1.6 * len(contenders) + 0.6),
                             squeeze=False)
    for ax, (name, entry) in zip(axes[:, 0], contenders.items(), strict=True):
        shown = entry["steps"][-steps:]
        origin = shown[0]["start_us"]
        for step in shown:
            start, ready, end = (step[k] - origin for k in ("start_us", "gradients_ready_us",
                                                            "end_us"))
            ax.broken_barh([(start / 1e3, (ready - start) / 1e3)], (1.1, 0.8), color="0.6")
            ax.broken_barh([(ready / 1e3, (end - ready) / 1e3)], (1.1, 0.8), color="0.85")
            for a_start, a_end in entry["intervals"]:
                if not step["start_us"] <= a_start < step["end_us"]:
                    continue
                low, high = a_start - origin, a_end - origin
                split = min(max(ready, low), high)
                if split > low:
                    ax.broken_barh([(low / 1e3, (split - low) / 1e3)], (0.1, 0.8),
                                   color="tab:blue")
                if high > split:
                    ax.broken_barh([(split / 1e3, (high - split) / 1e3)], (0.1, 0.8),
                                   color="tab:red")
        summary = entry["summary"]
        ax.set_title(f"{name}: {summary['hidden_fraction']:.0%} of the allreduce hidden, "
                     f"{summary['exposed_ms']:.1f} ms exposed per step (median)", fontsize=9)
        ax.set_yticks([0.5, 1.5], ["allreduce", "fwd+bwd | rest"])
        ax.set_xlabel("ms")
    _save(fig, path)
