"""``hvdtrain train --max-restarts N``: what a restart of hvdtrain's own training resumes from.

The policy itself (is a failure worth a restart, which hosts answer, the new plan, the records)
is ``launch.restarts``, shared with ``hvdtrain launch``; this module adds only what is train's:

**From where?** The newest complete checkpoint in the run directory (``--resume auto``), which
may be a mid-epoch step checkpoint: the loop continues that epoch at the new world size with no
sample skipped or repeated, and the lr rescaled for the new size. ``restarts.json`` and
``summary.json`` name that checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable

from hvdtrain.cluster.planning import Plan
from hvdtrain.launch.job import LaunchSettings
from hvdtrain.launch.protocol import RunLayout
from hvdtrain.launch.restarts import Attempt, RestartPolicy, run_with_restarts
from hvdtrain.launch.supervisor import JobResult
from hvdtrain.training.checkpoint import CheckpointStore


def resume_argument(layout: RunLayout, original: str | None) -> str | None:
    """What a restart resumes from: the run's newest checkpoint, else what the user asked
    for at first (a checkpoint of an earlier run), else nothing."""
    if CheckpointStore(layout.root / "checkpoints").files():
        return "auto"
    return original


def _newest(layout: RunLayout) -> str | None:
    latest = CheckpointStore(layout.root / "checkpoints").latest()
    return latest.name if latest else None


def train_with_restarts(plan: Plan, program: Callable[[str | None], list[str]],
                        settings: LaunchSettings, layout: RunLayout, policy: RestartPolicy,
                        resume: str | None) -> JobResult:
    """``launch.restarts.run_with_restarts`` for training: ``program(resume)`` is the rank
    command line resuming from ``resume``; a restart resumes from the newest checkpoint."""
    def attempt_program(attempt: Attempt) -> list[str]:
        return program(resume if attempt.number == 0 else resume_argument(layout, resume))

    return run_with_restarts(plan, attempt_program, settings, layout, policy,
                             lambda: _newest(layout))
