"""What ``plan`` and ``--dry-run`` show is exactly what a launch runs (argv and environment).

The real launch records its command in ``launch.json``; the plan's JSON and the dry run's
shell line must equal it. ``plan`` takes no training options, so its command is the same but
for the rank protocol's resolved options, which only ``train`` has.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest

from hvdtrain.launch.protocol import RANK_OPTIONS_ENV
from tests.helpers.jobs import hvdtrain, read_summary, run_job

ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


def _parse_shell_line(line: str) -> dict[str, object]:
    tokens = shlex.split(line)
    env = {}
    while tokens and ASSIGNMENT.match(tokens[0]):
        name, _, value = tokens.pop(0).partition("=")
        env[name] = value
    return {"argv": tokens, "env": env}


@pytest.mark.parametrize("launcher", ["mpirun", "horovodrun"])
def test_plan_dry_run_and_launch_agree(tmp_path: Path, launcher: str) -> None:
    run_dir = tmp_path / "run"
    common = ["-np", "2", "--launcher", launcher, "--run-dir", str(run_dir)]
    quick = {"HVDTRAIN_EPOCHS": "1", "HVDTRAIN_DATA": "breast-cancer"}

    planned = run_job(hvdtrain("plan", *common, "--json"), timeout=60, **quick)
    assert planned.returncode == 0, planned.stderr
    from_plan = json.loads(planned.stdout)["launch"]

    dry = run_job(hvdtrain("train", *common, "--dry-run"), timeout=60, **quick)
    assert dry.returncode == 0, dry.stderr
    from_dry_run = _parse_shell_line(dry.stdout.strip().splitlines()[-1])
    assert not run_dir.exists()  # a dry run writes nothing

    done = run_job(hvdtrain("train", *common), timeout=240, **quick)
    assert done.returncode == 0, done.stderr[-3000:]
    executed = json.loads((run_dir / "launch.json").read_text())

    assert from_dry_run == executed
    resolved = json.loads(executed["env"].pop(RANK_OPTIONS_ENV))
    argv = executed["argv"]
    if "-x" in argv:  # mpirun exports variables by name
        at = argv.index(RANK_OPTIONS_ENV)
        assert argv.pop(at - 1) == "-x" and argv.pop(at - 1) == RANK_OPTIONS_ENV
    assert from_plan == executed
    assert (resolved["epochs"], resolved["data"], resolved["run_dir"]) == (
        1, "breast-cancer", str(run_dir))
    assert executed["argv"][-4:] == [sys.executable, "-m", "hvdtrain", "train"]
    assert read_summary(run_dir)["world_size"] == 2


def test_launch_dry_run_is_what_launch_runs(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["-np", "2", "--run-dir", str(run_dir), "--", sys.executable, "-c", "pass"]
    dry = run_job(hvdtrain("launch", "--dry-run", *args), timeout=60)
    assert dry.returncode == 0, dry.stderr
    done = run_job(hvdtrain("launch", *args), timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    executed = json.loads((run_dir / "launch.json").read_text())
    assert _parse_shell_line(dry.stdout.strip().splitlines()[-1]) == executed
