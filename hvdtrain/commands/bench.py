"""``hvdtrain bench``: benchmarks with their baseline measured in the same run.

Thin: the ranks are planned and launched like any job (same placement and launch options);
the measuring happens in ``hvdtrain.benchmarks``; this module only renders the result.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from hvdtrain import catalog
from hvdtrain.cluster.planning import make_plan
from hvdtrain.commands.options import (
    choice,
    launch_options,
    launch_settings,
    placement_options,
    placement_request,
    verbosity_options,
)
from hvdtrain.commands.precedence import config_option, mirror_env
from hvdtrain.commands.render import table
from hvdtrain.errors import ConfigError
from hvdtrain.launch.job import layout_for, run_supervised

DEFAULT_SIZES = "4K,64K,1M,16M,64M"

shaped_hosts_option = click.option(
    "--shaped-hosts", type=int, default=2, show_default=True, metavar="N",
    help="With --shaped-link: how many namespace hosts (1 rank each), 2..3.")

plot_option = click.option(
    "--plot", type=click.Path(dir_okay=False, writable=True), default=None, metavar="PATH",
    help="Also draw the result as a PNG at PATH (needs matplotlib).")


@click.group()
def bench() -> None:
    """Benchmarks (each prints its baseline, measured in the same run)."""


def _check_shaped_hosts(shaped_link: str | None, count: int) -> None:
    """Before any lab or rank: a bad count fails in one line, not after minutes of set-up."""
    from hvdtrain.benchmarks.lab import check_count

    if shaped_link:
        check_count(count)
    elif count != 2:
        raise ConfigError("--shaped-hosts applies only with --shaped-link",
                          hint="e.g. --shaped-link 1gbit --shaped-hosts 3")


def _sizes(text: str) -> list[int]:
    from hvdtrain.benchmarks.allreduce import parse_size

    try:
        return [parse_size(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise ConfigError(f"--sizes {text!r}: {exc}", hint="e.g. --sizes 4K,1M,64M") from None


def _run_ranks(plan: Any, module: str, config: dict[str, Any], options: dict[str, Any],
               prefix: str = "hvdtrain-bench-") -> dict[str, Any]:
    """Launch ``python -m module OUT CONFIG_JSON`` on ``plan`` like any job, and read back the
    JSON its rank 0 wrote."""
    import sys

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        out = Path(tmp) / "result.json"
        program = [sys.executable, "-m", module, str(out), json.dumps(config)]
        run_supervised(plan, program, launch_settings(options), layout_for(Path(tmp) / "run"))
        return dict(json.loads(out.read_text()))


def _here_or_on_lab(shaped_link: str | None, shaped_hosts: int, options: dict[str, Any],
                    measure: Callable[[dict[str, Any]], Any]) -> tuple[Any, str]:
    """``measure(options)`` on the planned hosts, or with ``--shaped-link`` on namespace hosts
    (1 rank each) brought up, shaped and taken down around it; and where it ran, in words."""
    if not shaped_link:
        return measure(options), "this host"
    from hvdtrain.benchmarks.lab import shaped_hosts as lab

    with lab(shaped_link, shaped_hosts) as lab_hosts:
        result = measure({**options, "hosts": ",".join(f"{h}:1" for h in lab_hosts),
                          "np": None})
    return result, f"{len(lab_hosts)} namespace hosts, tc-shaped to {shaped_link}"


def _ddp_rendezvous(plan: Any) -> tuple[str, int]:
    """Rank 0's host and a free port there, for torch.distributed's store (DDP contenders)."""
    import socket

    first_host = plan.placement.ranks[0].host
    address = "127.0.0.1" if first_host in ("localhost", socket.gethostname()) else first_host
    with socket.socket() as probe:
        probe.bind(("", 0))
        return address, int(probe.getsockname()[1])


def render_allreduce(result: dict[str, Any]) -> str:
    from hvdtrain.benchmarks.allreduce import human_size

    rows = []
    for row in result["rows"]:
        ours, base = row["hvdtrain"], row.get("mpi")
        rows.append((human_size(row["bytes"]), row["dtype"], row["compression"],
                     f"{ours['seconds'] * 1e3:.3g}", f"{ours['busbw_gb_s']:.3g}",
                     "n/a" if base is None else f"{base['busbw_gb_s']:.3g}",
                     "n/a" if base is None else f"{row['ratio']:.2f}"))
    head = (f"allreduce on {result['ranks']} ranks ({result.get('link', 'this host')}), "
            f"controller {result['controller']}; "
            f"median of {result['config']['repeats']} interleaved timings; busbw = "
            "bytes/time × 2(n-1)/n")
    return head + "\n" + table(("size", "dtype", "compression", "ms", "busbw GB/s",
                                "MPI busbw GB/s", "MPI time / ours"), rows)


@bench.command("allreduce")
@config_option
@placement_options
@launch_options
@click.option("--sizes", default=DEFAULT_SIZES, show_default=True,
              help="Tensor sizes in bytes (K, M, G suffixes).")
@click.option("--dtypes", default="float32", show_default=True,
              help="Comma-separated: float32, float16.")
@click.option("--compressions", default="none,fp16", show_default=True,
              help="Comma-separated: none, fp16 (the overflow-safe pre-scaled fp16 sum).")
@click.option("--repeats", type=int, default=10, show_default=True)
@click.option("--shaped-link", default=None, metavar="RATE",
              help="Run on --shaped-hosts namespace hosts (1 rank each) whose links tc limits "
              "to RATE (e.g. 1gbit), brought up and removed by this command (root only).")
@shaped_hosts_option
@click.option("--json", "json_output", is_flag=True, help="Print one JSON object.")
@plot_option
@verbosity_options
def bench_allreduce(sizes: str, dtypes: str, compressions: str, repeats: int,
                    shaped_link: str | None, shaped_hosts: int, json_output: bool,
                    plot: str | None, **kw: Any) -> None:
    """Allreduce time and bandwidth through hvdtrain's seam vs raw MPI_Allreduce (mpi4py)."""

    from hvdtrain.benchmarks.allreduce import COMPRESSIONS, DTYPES, AllreduceConfig

    chosen_dtypes = tuple(d.strip() for d in dtypes.split(",") if d.strip())
    chosen_compressions = tuple(c.strip() for c in compressions.split(",") if c.strip())
    for flag, values, allowed in (("--dtypes", chosen_dtypes, DTYPES),
                                  ("--compressions", chosen_compressions, COMPRESSIONS)):
        unknown = sorted(set(values) - set(allowed))
        if unknown or not values:
            raise ConfigError(f"{flag}: {', '.join(unknown) or 'nothing given'} "
                              f"(choose from {', '.join(allowed)})")
    if repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {repeats}")
    _check_shaped_hosts(shaped_link, shaped_hosts)
    config = AllreduceConfig(tuple(_sizes(sizes)), chosen_dtypes, chosen_compressions, repeats)

    def measure(options: dict[str, Any]) -> dict[str, Any]:
        return _run_ranks(make_plan(placement_request(options)),
                          "hvdtrain.benchmarks.allreduce", config.__dict__, options)

    result, link = _here_or_on_lab(shaped_link, shaped_hosts, kw, measure)
    if shaped_link:
        result["link"] = link
    click.echo(json.dumps(result, indent=2) if json_output else render_allreduce(result))
    if plot:
        from hvdtrain.benchmarks.plot import plot_allreduce

        plot_allreduce(result, Path(plot))
        click.echo(f"plot: {plot}", err=json_output)


mirror_env(bench_allreduce)


def spread(stat: dict[str, Any]) -> str:
    """``0.83 (0.80–0.86)``: the median with its min–max."""
    return f"{stat['median']:.2f} ({stat['min']:.2f}–{stat['max']:.2f})"


def render_train(by_size: dict[int, dict[str, Any]]) -> str:
    """The table of ``combine_launches``' result: spreads next to medians, since one run's
    ratios on a noisy machine mean little without them."""
    from hvdtrain.benchmarks.stats import baselines

    sizes = sorted(by_size)
    many = sizes[-1]
    at_many = by_size[many]
    names = list(at_many["contenders"])
    bases = baselines(list(at_many["contenders"]))
    rows = []
    for name in names:
        entry = at_many["contenders"][name]
        scaling = spread(entry["scaling"]) if "scaling" in entry else "1.00"
        ratios = entry.get("ratios", {})
        rows.append((name, *(f"{by_size[s]['contenders'][name]['samples_per_second']:,.0f}"
                             for s in sizes), scaling,
                     *(spread(ratios[b]) if b in ratios else "n/a" for b in bases)))
    config = at_many["config"]
    framework = at_many.get("framework", "torch")
    rounds = config["rounds"]
    launches = len(next(iter(at_many["contenders"].values()))["per_launch"])
    if config.get("model") == "encoder":
        model = (f"BERT-style encoder ({config['layers']} layers, hidden {config['hidden']}, "
                 f"{config['sequence']} tokens/row)")
    else:
        model = f"MLP {config['features']}→{config['hidden']}→{config['hidden']}→1"
    gradient = at_many.get("gradient_bytes_per_step")
    head = (f"{framework} training throughput (aggregate samples/s over all ranks, median over "
            f"{launches} launch(es)), {model}, batch {config['batch_size']}/rank, "
            + (f"{gradient / 2**20:.1f} MiB of fp32 gradients allreduced per step, "
               if gradient else "") +
            f"1 thread/rank, {rounds} round(s) of interleaved {config['steps']}-step windows "
            f"per launch, order rotated each round; controller {at_many['controller']}; "
            f"{at_many.get('link', 'this host')}\n"
            + (f"scaling eff.: median (min–max) over {launches} launch pair(s) of 1 and {many} "
               "ranks; " if many > 1 else "")
            + f"vs columns: median (min–max) of per-round paired ratios over {rounds} rounds × "
            f"{launches} launches")
    return head + "\n" + table(
        ("contender", *(f"{s} rank(s)" for s in sizes), "scaling eff.",
         *(f"vs {b} @{many}" for b in bases)), rows)


@bench.command("train")
@config_option
@placement_options
@launch_options
@choice(catalog.FRAMEWORKS, default="torch", show_default=True,
        help="torch: hvdtrain vs minimal Horovod loop vs DDP; tensorflow: hvdtrain vs a "
        "minimal tf.function + Horovod loop.")
@click.option("--batch-size", type=int, default=256, show_default=True, help="Per rank.")
@click.option("--model", "bench_model", type=click.Choice(["mlp", "encoder"]), default="mlp",
              show_default=True, help="mlp; or encoder: a BERT-small-sized transformers "
              "encoder (4 layers, random weights) on packed token batches, as --model hf: "
              "trains (torch only).")
@click.option("--hidden", type=int, default=None,
              help="MLP width [default: 1024], or the encoder's hidden size [default: 256].")
@click.option("--sequence", type=int, default=128, show_default=True,
              help="Tokens per row (--model encoder).")
@click.option("--steps", type=int, default=20, show_default=True,
              help="Timed steps per window.")
@click.option("--rounds", type=int, default=3, show_default=True,
              help="Interleaved windows per launch.")
@click.option("--launches", type=int, default=2, show_default=True,
              help="Launches at each rank count, alternating 1 and N (medians across them; "
              "scaling pairs launch i at 1 rank with launch i at N).")
@click.option("--shaped-link", default=None, metavar="RATE",
              help="Run on --shaped-hosts namespace hosts (1 rank each) whose links tc limits "
              "to RATE (e.g. 1gbit), brought up and removed by this command (root only).")
@shaped_hosts_option
@click.option("--with-fp16", is_flag=True,
              help="Also time hvdtrain with --compression fp16 (contender hvdtrain-fp16): what "
              "halving the gradient bytes buys, e.g. over --shaped-link.")
@click.option("--with-compression", default="", metavar="LIST",
              help="Also time hvdtrain with these --compression choices (bf16, powersgd: "
              "contenders hvdtrain-bf16, hvdtrain-powersgd) and, for torch, DDP with its own "
              "hook for the same (ddp-bf16, ddp-powersgd at the same rank).")
@click.option("--powersgd-rank", type=int, default=4, show_default=True,
              help="The rank of the powersgd contenders.")
@click.option("--with-dense-embeddings", is_flag=True,
              help="Also time hvdtrain with --sparse-embeddings off (contender hvdtrain-dense; "
              "the others use auto): what sending an embedding's touched rows buys.")
@click.option("--json", "json_output", is_flag=True, help="Print one JSON object.")
@plot_option
@verbosity_options
def bench_train(framework: str, bench_model: str, batch_size: int, hidden: int | None,
                sequence: int, steps: int, rounds: int,
                launches: int, shaped_link: str | None, shaped_hosts: int, with_fp16: bool,
                with_compression: str, powersgd_rank: int, with_dense_embeddings: bool,
                json_output: bool, plot: str | None, **kw: Any) -> None:
    """Training throughput at 1 and N ranks: hvdtrain vs a minimal Horovod loop (vs DDP)."""
    from hvdtrain.benchmarks.stats import combine_launches
    from hvdtrain.benchmarks.train import CONTENDERS, DENSE, FP16, TrainBenchConfig

    extra = [FP16] if with_fp16 else []
    if with_dense_embeddings:
        if framework != "torch":
            raise ConfigError("--with-dense-embeddings is for --framework torch "
                              "(--sparse-embeddings is torch only)")
        extra.append(DENSE)
    for name in (c.strip() for c in with_compression.split(",") if c.strip()):
        if name not in ("bf16", "powersgd"):
            raise ConfigError(f"--with-compression {name!r}: choose from bf16, powersgd",
                              hint="fp16 has --with-fp16")
        extra += [f"hvdtrain-{name}", *((f"ddp-{name}",) if framework == "torch" else ())]
    if powersgd_rank < 1:
        raise ConfigError(f"--powersgd-rank must be >= 1, got {powersgd_rank}")

    if bench_model == "encoder" and framework != "torch":
        raise ConfigError("--model encoder runs with --framework torch (the hf: path)")
    hidden = hidden or (256 if bench_model == "encoder" else 1024)
    for flag, value in (("--batch-size", batch_size), ("--hidden", hidden), ("--steps", steps),
                        ("--rounds", rounds), ("--launches", launches),
                        ("--sequence", sequence)):
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    _check_shaped_hosts(shaped_link, shaped_hosts)

    def measure(options: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
        plan = make_plan(placement_request(options))
        single = make_plan(placement_request({**options, "np": 1}))
        runs: dict[int, list[dict[str, Any]]] = {1: [], plan.placement.size: []}
        for _ in range(launches):
            for each in (single, plan) if plan.placement.size > 1 else (single,):
                address, port = _ddp_rendezvous(each)
                config = TrainBenchConfig(batch_size=batch_size, hidden=hidden,
                                          model=bench_model, sequence=sequence, steps=steps,
                                          rounds=rounds, framework=framework,
                                          contenders=(*CONTENDERS[framework], *extra),
                                          powersgd_rank=powersgd_rank, ddp_address=address,
                                          ddp_port=port)
                runs[each.placement.size].append(
                    _run_ranks(each, "hvdtrain.benchmarks.train", config.__dict__, options))
        return runs

    runs, link = _here_or_on_lab(shaped_link, shaped_hosts, kw, measure)
    merged = combine_launches(runs, link)
    if json_output:
        click.echo(json.dumps({str(k): v for k, v in merged.items()}, indent=2))
    else:
        click.echo(render_train(merged))
    if plot:
        from hvdtrain.benchmarks.plot import plot_train

        plot_train(merged, Path(plot))
        click.echo(f"plot: {plot}", err=json_output)


mirror_env(bench_train)


@bench.command("serve")
@click.option("--checkpoint", default=None, metavar="PATH",
              help="The model to serve: a checkpoint or run directory (as hvdtrain serve).")
@click.option("--model-dir", default=None, metavar="PATH",
              help="Or an export with its sidecar (as hvdtrain serve).")
@click.option("--clients", default="1,16,64", show_default=True,
              help="Concurrent clients, each sending single-row requests one at a time.")
@click.option("--requests", type=int, default=2000, show_default=True,
              help="Requests per measurement (one client count, one configuration, one round).")
@click.option("--max-seconds", type=float, default=10.0, show_default=True,
              help="Time limit per measurement.")
@click.option("--rounds", type=int, default=3, show_default=True,
              help="Interleaved rounds (the order of on and off alternates).")
@click.option("--max-batch-size", type=int, default=64, show_default=True)
@click.option("--max-batch-delay-ms", type=float, default=0.0, show_default=True,
              help="The batching server's delay.")
@click.option("--workers", type=int, default=1, show_default=True)
@click.option("--json", "json_output", is_flag=True, help="Print one JSON object.")
@verbosity_options
def bench_serve(checkpoint: str | None, model_dir: str | None, clients: str, requests: int,
                max_seconds: float, rounds: int, max_batch_size: int,
                max_batch_delay_ms: float, workers: int, json_output: bool) -> None:
    """Serving on loopback: batching on vs off vs the runtime alone (hvdtrain.serving.bench)."""
    from hvdtrain.serving.bench import ServeBenchConfig, render, run

    try:
        counts = tuple(int(part) for part in clients.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--clients {clients!r}: comma-separated numbers, e.g. 1,16,64"
                          ) from None
    result = run(ServeBenchConfig(checkpoint, model_dir, counts, requests, max_seconds, rounds,
                                  max_batch_size, max_batch_delay_ms, workers))
    click.echo(json.dumps(result, indent=2) if json_output else render(result))


def render_overlap(result: dict[str, Any]) -> str:
    """One row per contender: medians over the measured steps of rank 0."""
    config = result["config"]
    rows = []
    for name, entry in result["contenders"].items():
        s = entry["summary"]
        rows.append((name, f"{s['step_ms']:.1f}", f"{s['backward_ms']:.1f}",
                     f"{s['communication_ms']:.1f}", f"{s['exposed_ms']:.1f}",
                     f"{s['hidden_fraction']:.2f} ({s['hidden_fraction_min']:.2f}–"
                     f"{s['hidden_fraction_max']:.2f})"))
    gradient = result["gradient_bytes_per_step"] / 2**20
    head = (f"allreduce hidden behind backward, {result['ranks']} ranks, {config['model']} "
            f"({gradient:.1f} MiB of fp32 gradients/step), batch {config['batch_size']}/rank, "
            f"{config['steps']} steps each after {config['warmup']} warm-up; "
            f"{result.get('link', 'this host')}; medians over rank 0's steps (ms). "
            "Horovod: network activities of its timeline; DDP: its bucket allreduces")
    return head + "\n" + table(("contender", "step", "fwd+bwd", "communication", "exposed",
                                "hidden fraction (min–max)"), rows)


@bench.command("overlap")
@config_option
@placement_options
@launch_options
@click.option("--batch-size", type=int, default=256, show_default=True, help="Per rank.")
@click.option("--model", "bench_model", type=click.Choice(["mlp", "encoder"]), default="mlp",
              show_default=True, help="The models of bench train.")
@click.option("--hidden", type=int, default=None,
              help="MLP width [default: 1024], or the encoder's hidden size [default: 256].")
@click.option("--sequence", type=int, default=128, show_default=True,
              help="Tokens per row (--model encoder).")
@click.option("--steps", type=int, default=10, show_default=True,
              help="Measured steps per contender.")
@click.option("--shaped-link", default=None, metavar="RATE",
              help="As bench train: namespace hosts joined by links tc limits to RATE.")
@shaped_hosts_option
@click.option("--json", "json_output", is_flag=True, help="Print one JSON object.")
@plot_option
@verbosity_options
def bench_overlap(bench_model: str, batch_size: int, hidden: int | None, sequence: int,
                  steps: int, shaped_link: str | None, shaped_hosts: int, json_output: bool,
                  plot: str | None, **kw: Any) -> None:
    """How much allreduce hides behind backward: hvdtrain, the Horovod loop and DDP (torch)."""
    from hvdtrain.benchmarks.train import TrainBenchConfig

    hidden = hidden or (256 if bench_model == "encoder" else 1024)
    for flag, value in (("--batch-size", batch_size), ("--hidden", hidden), ("--steps", steps),
                        ("--sequence", sequence)):
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    _check_shaped_hosts(shaped_link, shaped_hosts)

    def measure(options: dict[str, Any]) -> dict[str, Any]:
        plan = make_plan(placement_request(options))
        if plan.placement.size < 2:
            raise ConfigError("bench overlap needs 2 ranks or more (-np 2, or --shaped-link)")
        address, port = _ddp_rendezvous(plan)
        config = TrainBenchConfig(batch_size=batch_size, hidden=hidden, model=bench_model,
                                  sequence=sequence, steps=steps, ddp_address=address,
                                  ddp_port=port)
        return _run_ranks(plan, "hvdtrain.benchmarks.overlap", config.__dict__, options,
                          prefix="hvdtrain-overlap-")

    result, link = _here_or_on_lab(shaped_link, shaped_hosts, kw, measure)
    result["link"] = link
    if json_output:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(render_overlap(result))
    if plot:
        from hvdtrain.benchmarks.plot import plot_overlap

        plot_overlap(result, Path(plot))
        click.echo(f"plot: {plot}", err=json_output)


mirror_env(bench_overlap)
