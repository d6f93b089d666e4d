"""Which device a rank should use, and whether the launcher placed it where we planned.

Pure decision logic (unit-tested without GPUs); the framework adapters apply the result with
``torch.cuda.set_device`` or ``tf.config.set_visible_devices``. The plan travels to ranks
encoded by ``encode_plan`` (rank → host, local_rank, gpu) in the variable the rank protocol
(``launch.protocol``) names. A launcher that fills hosts differently
(``-map-by node``, a different hostfile order) shows up here as a clear warning instead of
two ranks silently sharing one GPU.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from hvdtrain.cluster.placement import Placement
from hvdtrain.types import DeviceChoice


def encode_plan(placement: Placement) -> str:
    """Compact JSON for the ranks: one ``[host, local_rank, gpu]`` per rank."""
    return json.dumps([[r.host, r.local_rank, r.gpu] for r in placement.ranks],
                      separators=(",", ":"))


def decode_plan(text: str | None) -> list[tuple[str, int, int]] | None:
    if not text:
        return None
    try:
        rows = json.loads(text)
        return [(str(h), int(lr), int(g)) for h, lr, g in rows]
    except (ValueError, TypeError):
        return None


def _same_host(planned: str, actual_names: Sequence[str]) -> bool:
    local_aliases = {"localhost", "127.0.0.1", "::1"}
    if planned in local_aliases:
        return True
    short = planned.split(".")[0]
    return any(name == planned or name.split(".")[0] == short for name in actual_names)


def choose_device(
    rank: int,
    local_rank: int,
    host_names: Sequence[str],
    gpus_visible: int,
    plan: list[tuple[str, int, int]] | None,
) -> DeviceChoice:
    mismatch = None
    gpu = local_rank
    if plan is not None:
        if rank >= len(plan):
            mismatch = (f"rank {rank} is outside the plan of {len(plan)} ranks: the launcher "
                        f"started more ranks than 'hvdtrain plan' placed")
        else:
            planned_host, planned_local, planned_gpu = plan[rank]
            if planned_local != local_rank or not _same_host(planned_host, host_names):
                mismatch = (f"rank {rank} was planned on {planned_host} as local_rank "
                            f"{planned_local} (GPU {planned_gpu}) but the launcher started it "
                            f"on {host_names[0] if host_names else '?'} as local_rank "
                            f"{local_rank}; using GPU by its real local_rank")
                actual = next((h for h, _lr, _g in plan if _same_host(h, host_names)), None)
                host_gpus = [g for h, _lr, g in plan if h == actual]
                gpu = host_gpus[local_rank] if local_rank < len(host_gpus) else local_rank
            else:
                gpu = planned_gpu
    if gpus_visible <= 0:
        return DeviceChoice("cpu", None, f"rank {rank}: no GPU on this host, using CPU", mismatch)
    if gpu >= gpus_visible:
        return DeviceChoice(
            "cpu", None,
            f"rank {rank}: planned GPU {gpu} but only {gpus_visible} visible, using CPU",
            mismatch or f"rank {rank}: GPU {gpu} does not exist here ({gpus_visible} visible)")
    return DeviceChoice("cuda", gpu, f"rank {rank}: GPU {gpu}", mismatch)
