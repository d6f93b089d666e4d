"""``hvdtrain launch``'s restarts and stop settings, without a rank: the exit-code list, the
restart loop against a stand-in for the supervised job, the variables each attempt exports, and
what ``--dry-run`` and ``plan`` show. The real runs are in tests/faults/test_launch_restarts.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hvdtrain.cluster.planning import PlacementRequest, Plan, make_plan
from hvdtrain.commands import main
from hvdtrain.commands.render import fault_tolerance
from hvdtrain.errors import ConfigError, ExitCode
from hvdtrain.launch import restarts
from hvdtrain.launch.failures import JobFailedError, rank_failed
from hvdtrain.launch.job import LaunchSettings, job_command
from hvdtrain.launch.protocol import ATTEMPT_ENV, WORLD_SIZE_ENV, RunLayout
from hvdtrain.launch.restarts import (
    FINAL_EXIT_CODES,
    RestartPolicy,
    parse_exit_codes,
    run_with_restarts,
    worth_restarting,
)
from hvdtrain.launch.supervisor import JobResult, Watchdog


def test_no_restart_on_takes_exit_codes() -> None:
    assert parse_exit_codes("2, 3,2") == {2, 3}
    assert parse_exit_codes(None) == parse_exit_codes("") == frozenset()


@pytest.mark.parametrize("text", ["x", "2,three", "0", "256", "-1", "2.5"])
def test_no_restart_on_refuses_what_is_no_exit_code(text: str) -> None:
    with pytest.raises(ConfigError, match="--no-restart-on"):
        parse_exit_codes(text)


def test_a_users_final_codes_are_its_own() -> None:
    layout = RunLayout(Path("/nonexistent"))
    crash = rank_failed(layout, 1, "localhost", 2, None)
    mine = frozenset({3, ExitCode.STOPPED})
    assert worth_restarting(crash, FINAL_EXIT_CODES)  # train: 2 is a bad option, final
    assert worth_restarting(crash, mine) is None  # a user's program: 2 is a crash like any
    assert "exit code 3" in str(worth_restarting(rank_failed(layout, 0, "h", 3, None), mine))
    # killed by a signal: restarted whatever code the shell made of it
    assert worth_restarting(rank_failed(layout, 0, "h", 3, 9), mine) is None


def _plan(np: int = 2) -> Plan:
    return make_plan(PlacementRequest(None, f"localhost:{np}", np, None, None))


def test_restart_loop_runs_each_attempt_and_records_the_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Attempt 0 fails on rank 1, attempt 1 succeeds: the program and settings of each attempt
    carry its number, restarts.json names the failure, attempt 0's logs are kept."""
    layout = RunLayout(tmp_path)
    seen: list[tuple[int, int, list[str]]] = []

    def supervised(plan: Plan, program: list[str], settings: LaunchSettings,
                   layout_: RunLayout) -> JobResult:
        seen.append((settings.attempt, plan.placement.size, program))
        layout_.prepare()
        if settings.attempt == 0:
            raise rank_failed(layout_, 1, "localhost", 1, None).as_error()
        return JobResult(layout_.root, (), 0.1)

    monkeypatch.setattr(restarts, "run_supervised", supervised)
    run_with_restarts(_plan(), lambda a: ["prog", str(a.number)], LaunchSettings(), layout,
                      RestartPolicy(1, final_exit_codes=frozenset({75})))
    assert seen == [(0, 2, ["prog", "0"]), (1, 2, ["prog", "1"])]
    [record] = json.loads((tmp_path / "restarts.json").read_text())
    assert record["reason"] == "rank 1 on localhost failed with exit code 1"
    assert (record["attempt"], record["exit_code"], record["new_world_size"]) == (0, 1, 2)
    assert record["resume_from"] is None  # a user's program resumes by itself
    assert (tmp_path / "attempts" / "0" / "logs").is_dir()


@pytest.mark.parametrize("code", [3, 75])
def test_a_final_code_is_not_restarted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       code: int) -> None:
    calls: list[int] = []

    def supervised(plan: Plan, program: list[str], settings: LaunchSettings,
                   layout_: RunLayout) -> JobResult:
        calls.append(settings.attempt)
        raise rank_failed(layout_, 0, "localhost", code, None).as_error()

    monkeypatch.setattr(restarts, "run_supervised", supervised)
    with pytest.raises(JobFailedError):
        run_with_restarts(_plan(), lambda a: ["p"], LaunchSettings(), RunLayout(tmp_path),
                          RestartPolicy(3, final_exit_codes=frozenset({3, 75})))
    assert calls == [0]
    assert not (tmp_path / "restarts.json").exists()


def test_each_attempt_exports_its_number_and_world_size(tmp_path: Path) -> None:
    settings = LaunchSettings(launcher="mpirun", mpi_flavour="openmpi", attempt=2)
    command = job_command(_plan(3), ["prog"], settings, RunLayout(tmp_path))
    assert command.env[ATTEMPT_ENV] == "2" and command.env[WORLD_SIZE_ENV] == "3"
    assert command.argv[command.argv.index(ATTEMPT_ENV) - 1:][:2] == ["-x", ATTEMPT_ENV]


def test_fault_tolerance_lines_for_launch_and_train() -> None:
    mine = RestartPolicy(2, True, 15.0, final_exit_codes=frozenset({3, 75}))
    restart, stop = fault_tolerance(mine, Watchdog(forward_stop=True, stop_timeout=40))
    assert "restart up to 2 time(s)" in restart and "the hosts that do" in restart
    assert "exit codes 3, 75 are final" in restart and ATTEMPT_ENV in restart
    assert "every rank gets SIGUSR1" in stop and "after 40 s" in stop
    restart, stop = fault_tolerance(RestartPolicy(), Watchdog(graceful_stop=True))
    assert "no restart" in restart
    assert "rank 0 writes a checkpoint" in stop


def test_launch_dry_run_shows_restarts_and_stop(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [
        "launch", "-np", "2", "--launcher", "mpirun", "--run-dir", str(tmp_path / "r"),
        "--max-restarts", "2", "--no-restart-on", "3", "--stop-timeout", "45", "--dry-run",
        "--", sys.executable, "x.py"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("on failure: restart up to 2 time(s)") and "3, 75" in line
               for line in lines), result.output
    assert any(line.startswith("on SIGTERM/SIGUSR1: every rank gets SIGUSR1") and "45 s" in line
               for line in lines), result.output
    assert f"{ATTEMPT_ENV}=0 " in lines[-1] and f"{WORLD_SIZE_ENV}=2 " in lines[-1]
    assert not (tmp_path / "r").exists()


def test_plan_json_shows_both_commands_fault_tolerance() -> None:
    result = CliRunner().invoke(main, ["plan", "-np", "2", "--max-restarts", "1",
                                       "--no-restart-on", "4", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)["fault_tolerance"]
    assert shown["launch"]["final_exit_codes"] == [4, 75]
    assert shown["train"]["final_exit_codes"] == sorted(FINAL_EXIT_CODES)
    assert shown["train"]["idle_timeout"] == restarts.RESTART_IDLE_TIMEOUT  # train only
    assert shown["launch"]["idle_timeout"] is None and shown["launch"]["max_restarts"] == 1


@pytest.mark.parametrize(("args", "fragment"), [
    (["--max-restarts", "-1"], "--max-restarts must be >= 0, got -1"),
    (["--max-restarts", "1", "--no-restart-on", "2,x"], "'x' is not an exit code"),
    (["--restart-wait", "-5"], "--restart-wait must be >= 0"),
])
def test_bad_restart_options_are_one_line_before_launch(tmp_path: Path, args: list[str],
                                                        fragment: str) -> None:
    result = CliRunner().invoke(main, ["launch", "-np", "2", "--run-dir", str(tmp_path / "r"),
                                       *args, "--", sys.executable, "x.py"])
    assert result.exit_code == ExitCode.CONFIG, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("hvdtrain: error: ") and fragment in first
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()
