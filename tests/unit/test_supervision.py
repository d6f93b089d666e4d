"""The rank protocol, the rank wrapper and the supervisor, without Horovod or MPI.

A "launcher" here is ``sh -c`` starting the real rank wrapper once per rank with the rank in
``OMPI_COMM_WORLD_RANK`` (what mpirun would set), so every path of the supervisor (success,
first failure, launcher gone, never started, timeout) runs for real in a second or two.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest

from hvdtrain.errors import ExitCode, RankFailedError
from hvdtrain.launch import failures
from hvdtrain.launch.argv import LaunchCommand
from hvdtrain.launch.protocol import (
    JOB_DIR_ENV,
    PLAN_ENV,
    RankExit,
    RankStart,
    RunLayout,
    relay_status,
    split_status,
    status_line,
)
from hvdtrain.launch.supervisor import JobResult, Watchdog, run_job

FAST = Watchdog(start_timeout=20, grace=2, poll_interval=0.05)


def test_layout_records_round_trip(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    layout.prepare()
    layout.write_start(RankStart(1, "h1", 10, 11, 5.0))
    layout.write_exit(RankExit(1, "h1", 3, None, 7.0))
    layout.write_exit(RankExit(0, "h0", 0, None, 6.0))
    layout.write_ready(0)
    assert layout.starts() == {1: RankStart(1, "h1", 10, 11, 5.0)}
    assert [e.rank for e in layout.exits()] == [0, 1]  # earliest first
    assert layout.ready() == {0}
    layout.prepare()  # a new job in the same directory forgets the old records
    assert layout.exits() == [] and layout.starts() == {}


def test_layout_names_the_protocol_variables(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    env = layout.environment("[]")
    assert env == {JOB_DIR_ENV: str(tmp_path), PLAN_ENV: "[]"}
    assert RunLayout.from_env(env) == layout
    assert RunLayout.from_env({}) is None
    assert layout.wrap(["x"])[-3:] == [str(tmp_path), "--", "x"]


def _wrapper(tmp_path: Path, program: str, rank: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hvdtrain.launch.rank_wrapper", str(tmp_path), "--",
         *shlex.split(program)], env={"OMPI_COMM_WORLD_RANK": str(rank), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60)


def test_rank_wrapper_records_start_exit_and_logs(tmp_path: Path) -> None:
    done = _wrapper(tmp_path, f"{sys.executable} -c \"import sys; print('out'); "
                    "print('boom', file=sys.stderr); sys.exit(3)\"", rank=1)
    assert done.returncode == 3
    layout = RunLayout(tmp_path)
    assert layout.stdout_log(1).read_text() == "out\n"
    assert layout.stderr_log(1).read_text() == "boom\n"
    # only rank 0 echoes its output; every rank prints its records for the supervisor
    records = [split_status(line.encode())[1] for line in done.stdout.splitlines()]
    assert [r and r["event"] for r in records] == ["start", "exit"]
    assert records[1] is not None and records[1]["stderr_tail"] == "boom"
    (exited,) = layout.exits()
    assert (exited.rank, exited.exit_code, exited.signal) == (1, 3, None)
    assert set(layout.starts()) == {1}


def test_rank_wrapper_reports_a_program_that_cannot_start(tmp_path: Path) -> None:
    done = _wrapper(tmp_path, "/no/such/program", rank=0)
    assert done.returncode == 127
    assert "cannot start '/no/such/program'" in RunLayout(tmp_path).stderr_log(0).read_text()
    assert RunLayout(tmp_path).exits()[0].exit_code == 127


def _fake_launcher(layout: RunLayout, programs: list[str]) -> LaunchCommand:
    """A shell that starts one wrapped rank per program, like mpirun would."""
    lines = [f"OMPI_COMM_WORLD_RANK={rank} {shlex.join(layout.wrap(shlex.split(p)))} &"
             for rank, p in enumerate(programs)]
    return LaunchCommand(["sh", "-c", "\n".join([*lines, "wait"])])


def _supervise(tmp_path: Path, programs: list[str], watchdog: Watchdog = FAST,
               command: LaunchCommand | None = None) -> tuple[JobResult | RankFailedError, str]:
    layout = RunLayout(tmp_path)
    report = StringIO()
    try:
        result: JobResult | RankFailedError = run_job(
            command or _fake_launcher(layout, programs), len(programs), layout, watchdog,
            report=report)
    except RankFailedError as exc:
        result = exc
    return result, report.getvalue()


PY = shlex.quote(sys.executable)


def test_all_ranks_succeed(tmp_path: Path) -> None:
    result, report = _supervise(tmp_path, [f"{PY} -c pass"] * 2)
    assert isinstance(result, JobResult), report
    assert sorted(r.rank for r in result.ranks) == [0, 1]


def test_first_failing_rank_is_named_with_its_stderr(tmp_path: Path) -> None:
    failing = f"{PY} -c \"import sys; print('disk on fire', file=sys.stderr); sys.exit(3)\""
    result, report = _supervise(tmp_path, [f"{PY} -c 'import time; time.sleep(30)'", failing])
    assert isinstance(result, RankFailedError)
    assert result.exit_code == 3
    assert "rank 1 on" in report and "failed first (exit code 3)" in report
    assert "--- last lines of rank 1 stderr ---\ndisk on fire\n---" in report


def test_a_stop_counts_when_another_rank_leaves_before_rank_0(tmp_path: Path) -> None:
    """Rank 1 exits 75 (only ever after rank 0's checkpoint is complete) while rank 0 has not
    exited yet, as when mpirun ends rank 0 at rank 1's exit: the job stopped, exit 75."""
    stopped = f"{PY} -c 'import sys; sys.exit(75)'"
    result, report = _supervise(tmp_path, [f"{PY} -c 'import time; time.sleep(30)'", stopped])
    assert isinstance(result, RankFailedError), report
    assert result.exit_code == 75
    assert "every rank stopped" in result.message and "--resume auto" in (result.hint or "")
    # rank 0 ending otherwise (here before rank 1's 75) is no stop
    failed = f"{PY} -c 'import sys; sys.exit(3)'"
    late_stop = f"{PY} -c 'import sys, time; time.sleep(5); sys.exit(75)'"
    result, report = _supervise(tmp_path / "other", [failed, late_stop])
    assert isinstance(result, RankFailedError) and result.exit_code != 75, report


def test_ranks_that_never_start_are_reported(tmp_path: Path) -> None:
    watchdog = Watchdog(start_timeout=0.5, grace=1, poll_interval=0.05)
    result, report = _supervise(tmp_path, ["x", "y"], watchdog,
                                LaunchCommand(["sh", "-c", "echo stuck on ssh >&2; sleep 30"]))
    assert isinstance(result, RankFailedError)
    assert result.exit_code == ExitCode.NOT_STARTED
    assert "ranks [0, 1] did not start within 0.5 s" in report
    assert "stuck on ssh" in report  # the launcher's own words


def test_a_launcher_that_exits_early_is_reported(tmp_path: Path) -> None:
    result, report = _supervise(tmp_path, ["x", "y"], FAST,
                                LaunchCommand(["sh", "-c", "echo no hosts >&2; exit 7"]))
    assert isinstance(result, RankFailedError)
    assert result.exit_code == 7
    assert "the launcher (sh) exited with code 7 before every rank finished" in report


def test_a_hung_job_is_stopped_by_its_timeout(tmp_path: Path) -> None:
    watchdog = Watchdog(start_timeout=20, timeout=1.5, grace=1, poll_interval=0.05)
    sleeper = f"{PY} -c 'import time; time.sleep(60)'"
    result, report = _supervise(tmp_path, [sleeper, sleeper], watchdog)
    assert isinstance(result, RankFailedError)
    assert result.exit_code == ExitCode.TIMEOUT
    assert "ran past its 1.5 s timeout; ranks still running: [0, 1]" in report


def test_records_relayed_over_stdout_need_no_shared_directory(tmp_path: Path) -> None:
    """A rank on another host writes into *its* view of the run directory; the supervisor
    only sees its stdout, forwarded (and perhaps prefixed) by the launcher."""
    import io

    exit_record = RankExit(1, "far-host", 3, None, 2.0, "disk on fire", "far-host:/r/logs")
    stream = io.BytesIO(b"epoch 1 loss 0.5\n"
                        + b"[1]<stdout>:" + status_line("start", {"rank": 1, "host": "far-host",
                                                                   "pid": 5, "child_pid": 6,
                                                                   "time": 1.0})
                        + b"partial output" + status_line("exit", exit_record.__dict__))
    shown = io.BytesIO()
    layout = RunLayout(tmp_path)
    relay_status(stream, layout, shown)
    assert shown.getvalue() == b"epoch 1 loss 0.5\npartial output\n"
    assert layout.starts()[1].host == "far-host"
    assert layout.exits() == [exit_record]
    failure = failures.rank_failed(layout, 1, "far-host", 3, None, exit_record.logs)
    report = failure.with_tails(layout).format()
    assert "--- last lines of rank 1 stderr ---\ndisk on fire\n---" in report
    assert "far-host:/r/logs" in report


def test_failure_value_formats_its_report() -> None:
    failure = failures.rank_failed(RunLayout(Path("/r")), 2, "node7", 9, None)
    failure = failures.JobFailure(**{**failure.__dict__, "tails": (("rank 2 stderr", "oom"),)})
    assert failure.format() == ("hvdtrain: rank 2 on node7 failed first (exit code 9)\n"
                                "--- last lines of rank 2 stderr ---\noom\n---\n"
                                "hvdtrain: all rank logs are in /r/logs")
    error = failure.as_error()
    assert (error.exit_code, error.message) == (9, "rank 2 on node7 failed with exit code 9")


@pytest.mark.parametrize("bad", [{"start_timeout": 0}, {"timeout": -1}, {"idle_timeout": 0}])
def test_watchdog_validates_its_options(bad: dict[str, float]) -> None:
    from hvdtrain.errors import ConfigError

    with pytest.raises(ConfigError, match="must be > 0 seconds"):
        Watchdog(**bad)


def test_one_voice_on_the_terminal(tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]
                                   ) -> None:
    """Rank 0's own output is shown once; the launcher's banner goes to launcher.log only."""
    layout = RunLayout(tmp_path)
    ranks = _fake_launcher(layout, [
        f"{PY} -c \"import sys, time; print('epoch 1 done'); print('bad data', file=sys.stderr); "
        "time.sleep(2); sys.exit(2)\"",
        f"{PY} -c 'import time; time.sleep(30)'"])
    banner = "(sleep 1; echo 'Primary job terminated normally, but 1 process returned' >&2) &"
    command = LaunchCommand(["sh", "-c", f"{banner}\n{ranks.argv[2]}"])
    report = StringIO()
    with pytest.raises(RankFailedError):
        run_job(command, 2, layout, FAST, report=report)
    out, err = (stream.decode() for stream in capfdbinary.readouterr())
    assert out.count("epoch 1 done") == 1 and err.count("bad data") == 1
    assert "Primary job terminated" not in out + err + report.getvalue()
    assert "Primary job terminated" in layout.launcher_log.read_text()
    assert "bad data" not in report.getvalue()  # already shown above, not repeated
    assert f"the launcher's own messages are in {layout.launcher_log}" in report.getvalue()
