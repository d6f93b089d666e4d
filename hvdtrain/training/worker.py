"""What a rank does: initialise Horovod, pin its device, load the data, run the loop.

Entered when ``hvdtrain train`` finds it already is a rank (horovodrun, mpirun or our own
launcher started it). Imports exactly one framework, chosen by ``--framework``. This module is
where the layers meet: the adapter (``frameworks``), its comm binding, the loop and the data
(``training``), and the rank protocol (``launch.protocol``: "Horovod is initialised", the run
directory and the plan the launcher chose).
"""

from __future__ import annotations

import faulthandler
import os
import signal
import socket
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from hvdtrain.config import TrainConfig
from hvdtrain.frameworks.registry import create_adapter
from hvdtrain.launch.protocol import RunLayout
from hvdtrain.log import logger
from hvdtrain.pretrained import is_pretrained
from hvdtrain.training.commits import StopRequest
from hvdtrain.training.datasets import load_dataset
from hvdtrain.training.host_identity import device_choice
from hvdtrain.training.loop import LoopOptions, train
from hvdtrain.training.text_data import load_text_dataset


def stop_on_signals(stop: StopRequest) -> None:
    """SIGUSR1 and SIGTERM ask for a stop at the next agreed step, with a checkpoint (Slurm's
    ``--signal=USR1@T`` warning, preemption's SIGTERM, ``scancel --signal``, a pod's
    termination). Repeats change nothing: under Slurm a rank gets SIGTERM from Slurm and again
    from mpirun, and the checkpoint must still be written. Stopping at once is SIGKILL, which is
    what hvdtrain's launcher sends on a hard stop."""

    def request(signum: int, _frame: object) -> None:
        stop.signal_name = stop.signal_name or signal.Signals(signum).name

    for sig in (signal.SIGUSR1, signal.SIGTERM):
        signal.signal(sig, request)


def run_worker(config: TrainConfig, options: LoopOptions | None = None,
               env: Mapping[str, str] | None = None,
               elastic_commit_every: int | None = None) -> dict[str, Any]:
    """``elastic_commit_every``: run under Horovod elastic (``training.elastic_loop``), committing
    every that many steps."""
    env = os.environ if env is None else env
    options = options or LoopOptions()
    faulthandler.register(signal.SIGUSR2, all_threads=True)  # stacks on demand for hangs
    stop_on_signals(options.stop)
    layout = RunLayout.from_env(env)
    if layout is not None:  # launched by hvdtrain: the run directory it chose
        config = replace(config, run_dir=str(layout.root))
    adapter = create_adapter(config.framework)
    comm = adapter.comm
    if layout is not None:
        layout.write_ready(comm.rank)
    choice = device_choice(comm.rank, comm.local_rank, env)
    if choice.mismatch:
        logger.warning("warning: %s", choice.mismatch)
    adapter.pin(choice)
    run_dir = Path(config.run_dir)
    if comm.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    if is_pretrained(config.model):
        # each rank tokenizes its share; not under elastic, where a collective before the
        # state's sync would deadlock a worker that joins a running job
        data = load_text_dataset(config, None if elastic_commit_every is not None else comm)
    else:
        data = load_dataset(config.data, config.seed, config.val_fraction, config.label_column)
    elastic = elastic_commit_every is not None
    if elastic:
        adapter.setup(config, data, broadcast=False)  # its state's sync broadcasts
    else:
        adapter.setup(config, data)

    def place_ranks() -> list[dict[str, Any]]:
        """Where every rank runs (a collective; elastic: again after each reset)."""
        placed: list[dict[str, Any]] = comm.allgather_object({
            "rank": comm.rank, "host": socket.gethostname(), "local_rank": comm.local_rank,
            "device": adapter.describe_device(), "placement_warning": choice.mismatch})
        if comm.rank == 0:
            hosts: dict[str, int] = {}
            for rank in placed:
                hosts[rank["host"]] = hosts.get(rank["host"], 0) + 1
            devices = ",".join(f"{rank['rank']}:{rank['device']}" for rank in placed)
            logger.info(f"{comm.size} ranks on "
                        f"{', '.join(f'{h}({n})' for h, n in hosts.items())} | devices "
                        f"{devices} | {config.framework} "
                        f"{config.model} on {config.data} | compression {config.compression} | "
                        f"lr {config.lr:g} -> {config.scaled_lr(comm.size):g} "
                        f"({config.lr_scaling})")
        return placed

    if elastic_commit_every is not None:
        from hvdtrain.training.elastic_loop import train_elastic  # imports Horovod's elastic API

        return train_elastic(adapter, config, data, run_dir, options, place_ranks,
                             elastic_commit_every)
    return train(adapter, comm, config, data, run_dir, options, place_ranks())
