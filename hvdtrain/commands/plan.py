"""``hvdtrain plan``: where every rank goes, and exactly what a launch with these options runs.

It takes the same placement and launch options as ``train``, builds the command through the
same ``launch.job.job_command``, and shows it; ``--json`` gives the same as data. The commands
for starting the ranks by hand (``horovodrun``/``mpirun`` ... ``hvdtrain train``) come from the
same builder. What ``train`` and ``launch`` would do on a failure and on a stop request
(``--max-restarts``, ``--no-restart-on``, ``--stop-timeout``) is shown for both, from the same
``render.fault_tolerance`` that their ``--dry-run`` prints.

``--estimate`` predicts instead what a step will cost on this plan (``cluster.estimate``: the
ring-allreduce model, from a parameter count, compute time per step and link figures), and at
8, 64 and 512 GPUs next to Horovod's published ResNet-101 figure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from hvdtrain.cluster.planning import make_plan
from hvdtrain.commands.options import (
    discovery_script_option,
    elastic_options,
    elastic_settings,
    launch_options,
    launch_settings,
    no_restart_on_option,
    placement_options,
    placement_request,
    program_final_codes,
    restart_options,
    restart_policy,
    train_program,
    verbosity_options,
)
from hvdtrain.commands.precedence import config_option, mirror_env
from hvdtrain.commands.render import command_line, fault_tolerance, show_plan, table
from hvdtrain.errors import ExitCode
from hvdtrain.launch.job import job_command, layout_for, manual_commands
from hvdtrain.launch.protocol import RANK_OPTIONS_ENV
from hvdtrain.launch.restarts import RestartPolicy, with_hang_limit
from hvdtrain.launch.supervisor import Watchdog
from hvdtrain.launch.user_elastic import elastic_notes, elastic_plan

BY_HAND_PROGRAM = ["hvdtrain", "train"]


@click.command()
@config_option
@placement_options
@launch_options
@elastic_options
@discovery_script_option
@restart_options
@no_restart_on_option
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="The run directory the launch would use (default: a new runs/<timestamp>).")
@click.option("--json", "json_output", is_flag=True, help="Print one JSON object.")
@click.option("--estimate", is_flag=True,
              help="Predict step time, communication share, scaling efficiency and the fp16 "
              "gain on this plan (ring-allreduce model), and at 8/64/512 GPUs.")
@click.option("--params", default=None, metavar="N|NAME",
              help="--estimate: parameter count (e.g. 44.5M) or mlp, bench-mlp, resnet50, "
              "resnet101.")
@click.option("--powersgd-rank", type=int, default=4, show_default=True,
              help="--estimate: the rank of --compression powersgd's row (a known model's "
              "shapes only).")
@click.option("--compute-ms", type=float, default=None,
              help="--estimate: compute time per step on one device (forward, backward, "
              "update), measured, in ms.")
@click.option("--intra-gbit", type=float, default=None,
              help="--estimate: bandwidth between ranks of one host [default: 80 Gbit/s].")
@click.option("--intra-latency-us", type=float, default=None,
              help="--estimate: latency between ranks of one host [default: 5 µs].")
@click.option("--inter-gbit", type=float, default=None,
              help="--estimate: bandwidth between hosts [default: 25 Gbit/s].")
@click.option("--inter-latency-us", type=float, default=None,
              help="--estimate: latency between hosts [default: 30 µs].")
@click.option("--link-profile", type=click.Path(dir_okay=False, exists=True), default=None,
              help="--estimate: link figures from a JSON file ({\"inter\": {\"gbit_s\": 25, "
              "\"latency_us\": 30}, \"intra\": ...}, or 'bench allreduce --json' output, "
              "fitted); flags override it.")
@verbosity_options
def plan(json_output: bool, run_dir: str | None, estimate: bool, **kw: Any) -> None:
    """Show the placement (rank → host, local rank, GPU) and the launch command."""
    the_plan = (elastic_plan(placement_request(kw), elastic_settings(kw))
                if kw.get("discovery_script") else make_plan(placement_request(kw)))
    if estimate:
        show_estimate(the_plan.placement.host_slots(), kw, json_output)
        return
    settings = launch_settings(kw, require_ready=True, graceful_stop=True)
    layout = layout_for(run_dir)
    # on a failure and on a stop request: train's ranks, and a user's program under launch
    train_policy = restart_policy(kw)
    policies = {"train": (train_policy, with_hang_limit(settings.watchdog, train_policy)),
                "launch": (restart_policy(kw, program_final_codes(kw)),
                           launch_settings(kw, forward_stop=True).watchdog)}
    command = job_command(the_plan, train_program(), settings, layout)
    by_hand = manual_commands(the_plan, BY_HAND_PROGRAM, settings)
    if json_output:
        click.echo(json.dumps({
            "size": the_plan.placement.size,
            "source": the_plan.source.description,
            "hosts": [h.as_json() for h in the_plan.hosts],
            "ranks": [r.as_json() for r in the_plan.placement.ranks],
            "launch": {"argv": command.argv, "env": command.env},
            "commands": {name: c.argv for name, c in by_hand.items()},
            "commands_env": {name: c.env for name, c in by_hand.items()},
            "fault_tolerance": {name: _fault_json(policy, watchdog)
                                for name, (policy, watchdog) in policies.items()},
        }, indent=2))
        return
    show_plan(the_plan)
    click.echo("\n'hvdtrain train' with these options runs exactly:")
    click.echo(f"  {command_line(command)}")
    click.echo(f"  plus {RANK_OPTIONS_ENV}, train's options as resolved on this host "
               "('hvdtrain train ... --dry-run' shows it)")
    for name, (policy, watchdog) in policies.items():
        click.echo(f"\n'hvdtrain {name}' with these options:")
        for line in fault_tolerance(policy, watchdog):
            click.echo(f"  {line}")
    if settings.elastic is not None:
        click.echo("")
        for line in elastic_notes(settings.elastic, layout.root, the_plan.placement.size):
            click.echo(line)
        return
    click.echo("\nor start the ranks yourself (each then trains as a worker):")
    for name, by_hand_command in by_hand.items():
        click.echo(f"  [{name}] {command_line(by_hand_command)}")


def _fault_json(policy: RestartPolicy, watchdog: Watchdog) -> dict[str, Any]:
    """``--json``: what ``fault_tolerance`` says, as data."""
    return {"max_restarts": policy.max_restarts, "restart_on_fewer_hosts": policy.fewer_hosts,
            "restart_wait": policy.health_wait,
            "final_exit_codes": sorted(policy.final_exit_codes),
            "idle_timeout": watchdog.idle_timeout, "stop_timeout": watchdog.stop_timeout,
            "stop_signal_to_ranks": "SIGUSR1", "stopped_exit_code": int(ExitCode.STOPPED)}


def show_estimate(host_slots: list[Any], kw: dict[str, Any], json_output: bool) -> None:
    """The cost model on this plan's layout, then at 8/64/512 GPUs and for the published
    ResNet-101 run; a table, or one JSON object."""
    from hvdtrain.cluster import estimate as est
    from hvdtrain.errors import ConfigError

    if kw["params"] is None or kw["compute_ms"] is None:
        raise ConfigError("--estimate needs --params and --compute-ms",
                          hint="e.g. hvdtrain plan --hosts a:4,b:4 --estimate --params 44.5M "
                          "--compute-ms 450")
    parameters = est.model_parameters(kw["params"])
    compute_s = kw["compute_ms"] / 1e3
    links = est.read_link_profile(Path(kw["link_profile"])) if kw["link_profile"] else {}
    intra = links.get("intra", est.DEFAULT_INTRA)
    inter = links.get("inter", est.DEFAULT_INTER)
    intra = est.Link(kw["intra_gbit"] or intra.gbit_s, _given(kw["intra_latency_us"],
                                                              intra.latency_us))
    inter = est.Link(kw["inter_gbit"] or inter.gbit_s, _given(kw["inter_latency_us"],
                                                              inter.latency_us))
    fusion_mb = kw.get("fusion_threshold_mb")
    fusion = est.FUSION_BYTES if fusion_mb is None else int(fusion_mb * 1024 * 1024)
    per_host = max(count for _, count in host_slots)
    layout = est.Layout(hosts=len(host_slots), ranks_per_host=per_host)
    options: dict[str, Any] = {"intra": intra, "inter": inter, "fusion_bytes": fusion}
    here = {c: est.estimate(parameters, compute_s, layout, compression=c, **options)
            for c in ("none", "fp16", "bf16")}
    shapes = est.model_shapes(kw["params"])
    if kw["powersgd_rank"] < 1:
        raise ConfigError(f"--powersgd-rank must be >= 1, got {kw['powersgd_rank']}")
    if shapes is not None:  # PowerSGD's bytes depend on the gradients' shapes
        here["powersgd"] = est.estimate(parameters, compute_s, layout, compression="powersgd",
                                        shapes=shapes, powersgd_rank=kw["powersgd_rank"],
                                        **options)
    gain = here["none"].step_s / here["fp16"].step_s
    scale = _scaled(parameters, compute_s, per_host, options)
    reference = _scaled(est.resnet_parameters((3, 4, 23, 3)), est.RESNET101_COMPUTE_S,
                        est.RESNET101_GPUS_PER_HOST,
                        {"intra": est.DEFAULT_INTRA, "inter": est.Link(25.0, 30.0),
                         "fusion_bytes": est.FUSION_BYTES})
    if json_output:
        click.echo(json.dumps({
            "parameters": parameters, "compute_s": compute_s, "fusion_bytes": fusion,
            "links": {"intra": intra.__dict__, "inter": inter.__dict__},
            "plan": {n: e.as_json() for n, e in here.items()}, "fp16_gain": gain,
            "at_scale": [e.as_json() for e in scale],
            "resnet101": {"parameters": est.resnet_parameters((3, 4, 23, 3)),
                          "compute_s": est.RESNET101_COMPUTE_S,
                          "published_efficiency": {str(k): v for k, v in est.PUBLISHED.items()},
                          "at_scale": [e.as_json() for e in reference]}}, indent=2))
        return
    click.echo(f"{parameters:,} parameters ({here['none'].gradient_bytes / 1e6:.1f} MB fp32 "
               f"gradients), {kw['compute_ms']:g} ms compute per step on one device\nlinks: "
               f"intra-host {intra.gbit_s:g} Gbit/s {intra.latency_us:g} µs, inter-host "
               f"{inter.gbit_s:g} Gbit/s {inter.latency_us:g} µs; fusion buffers "
               f"{fusion / 2**20:g} MiB")
    click.echo(f"\nthis plan: {layout.hosts} host(s) × {per_host} rank(s), "
               f"{here['none'].algorithm} allreduce")
    click.echo(table(("gradients", "buffers", "comm ms", "step ms", "comm share", "scaling eff.",
                      "step ms if overlapped", "eff. if overlapped"),
                     [_row(n, e) for n, e in here.items()]))
    click.echo(f"fp16 gain: {gain:.2f}× step time (no overlap)")
    if shapes is None:
        click.echo("powersgd: give a known model to --params for its row (its bytes depend "
                   f"on the gradients' shapes: {', '.join(est.MODEL_SHAPES)})")
    click.echo(f"\nthe same at scale ({per_host} rank(s) per host, fp32 gradients):")
    click.echo(_scale_table(scale, {}))
    click.echo(f"\nreference: ResNet-101, {reference[0].gradient_bytes // 4:,} parameters, "
               f"{est.RESNET101_COMPUTE_S * 1e3:g} ms compute per step (assumed: batch 64 at "
               f"~140 images/s on a P100), {est.RESNET101_GPUS_PER_HOST} GPUs per host, 25 "
               "Gbit/s between hosts; Horovod published 90 % scaling at 512 GPUs:")
    click.echo(_scale_table(reference, est.PUBLISHED))
    click.echo("\nstep ms: compute + all allreduces (none hidden); 'if overlapped': the "
               "allreduces hide behind the backward pass (2/3 of compute) as far as they fit. "
               "The truth lies between.")


def _given(value: float | None, default: float) -> float:
    return default if value is None else value


def _scaled(parameters: int, compute_s: float, per_host: int,
            options: dict[str, Any]) -> list[Any]:
    from hvdtrain.cluster import estimate as est

    return [est.estimate(parameters, compute_s,
                         est.Layout(hosts=max(1, gpus // per_host),
                                    ranks_per_host=min(per_host, gpus)), **options)
            for gpus in (8, 64, 512)]


def _row(name: str, e: Any) -> tuple[str, ...]:
    label = {"none": "fp32", "powersgd": f"powersgd ({e.gradient_bytes / 1e6:.2f} MB)"}
    return (label.get(name, name), str(e.buffers), f"{e.comm_s * 1e3:.1f}",
            f"{e.step_s * 1e3:.1f}", f"{e.comm_share:.0%}", f"{e.efficiency:.0%}",
            f"{e.step_overlapped_s * 1e3:.1f}", f"{e.efficiency_overlapped:.0%}")


def _scale_table(rows: list[Any], published: dict[int, float]) -> str:
    return table(("GPUs", "hosts", "algorithm", "comm ms", "step ms", "scaling eff.",
                  "eff. if overlapped", "published"),
                 [(e.ranks, e.hosts, e.algorithm, f"{e.comm_s * 1e3:.1f}",
                   f"{e.step_s * 1e3:.1f}", f"{e.efficiency:.0%}",
                   f"{e.efficiency_overlapped:.0%}",
                   f"{published[e.ranks]:.0%}" if e.ranks in published else "")
                  for e in rows])


mirror_env(plan)
