"""Horovod elastic without a job: the discovery script, the horovodrun argv, the options'
validation, the supervisor's elastic mode (a fake launcher), and ``LoopState``'s commit,
restore, reset and sync on a fake adapter."""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from io import BytesIO, StringIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hvdtrain.cluster.planning import PlacementRequest, make_plan
from hvdtrain.commands.options import elastic_settings
from hvdtrain.errors import ConfigError, RankFailedError
from hvdtrain.launch.argv import LaunchCommand
from hvdtrain.launch.elastic_hosts import (
    ElasticSettings,
    hostfile_path,
    script_path,
    write_discovery,
)
from hvdtrain.launch.job import LaunchSettings, job_command, manual_commands
from hvdtrain.launch.protocol import (
    JOB_DIR_ENV,
    PLAN_ENV,
    RunLayout,
    relay_status,
    split_voice,
    status_line,
    untag,
    voice_line,
)
from hvdtrain.launch.supervisor import JobResult, Watchdog, run_job

PY = shlex.quote(sys.executable)
ELASTIC = Watchdog(start_timeout=20, grace=2, poll_interval=0.05, elastic=True)


def _plan(tmp_path: Path, text: str, np_: int) -> Any:
    hostfile = tmp_path / "hosts"
    hostfile.write_text(text)
    return make_plan(PlacementRequest(hostfile=str(hostfile), np=np_)), hostfile


# -- discovery ---------------------------------------------------------------------------------
def _discover(script: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(script)], capture_output=True, text=True, timeout=60)


def test_the_discovery_script_rereads_the_hostfile_on_every_call(tmp_path: Path) -> None:
    plan, hostfile = _plan(tmp_path, "localhost slots=2  # this machine\n", 2)
    settings = ElasticSettings(min_np=1, max_np=3, hostfile=str(hostfile))
    script = write_discovery(tmp_path, plan, settings)
    assert script == script_path(tmp_path) and hostfile_path(tmp_path, settings) == hostfile
    assert _discover(script).stdout.split() == ["localhost:2"]
    hostfile.write_text("localhost slots=2\n127.0.0.1:1\n")  # a host added while it runs
    assert _discover(script).stdout.split() == ["localhost:2", "127.0.0.1:1"]
    hostfile.write_text("localhost slots=two\n")  # a bad edit: an error, no hosts
    bad = _discover(script)
    assert bad.returncode == 1 and "slots must be a positive integer" in bad.stderr


def test_hosts_not_from_a_hostfile_get_one_in_the_run_dir(tmp_path: Path) -> None:
    plan = make_plan(PlacementRequest(hosts="localhost:2,127.0.0.1:1", np=3))
    script = write_discovery(tmp_path, plan, ElasticSettings(min_np=2))
    assert (tmp_path / "elastic-hosts").is_file()
    assert _discover(script).stdout.split() == ["localhost:2", "127.0.0.1:1"]


def test_ipv6_hosts_are_refused_for_discovery(tmp_path: Path) -> None:
    plan = make_plan(PlacementRequest(hosts="[fe80::1]:2", np=2))
    with pytest.raises(ConfigError, match="cannot express IPv6"):
        write_discovery(tmp_path, plan, ElasticSettings())


# -- the command -------------------------------------------------------------------------------
def test_the_elastic_command_is_horovodrun_gloo_with_discovery(tmp_path: Path) -> None:
    plan, hostfile = _plan(tmp_path, "localhost slots=2\n127.0.0.1 slots=1\n", 3)
    layout = RunLayout(tmp_path / "run")
    settings = LaunchSettings(elastic=ElasticSettings(2, 3, 30, 5, str(hostfile)))
    command = job_command(plan, ["train"], settings, layout)
    argv = command.argv
    assert argv[0].endswith("horovodrun")
    assert argv[1:argv.index("--gloo")] == [
        "-np", "3", "--min-np", "2", "--max-np", "3",
        "--host-discovery-script", str(script_path(layout.root))]
    assert argv[argv.index("--elastic-timeout") + 1] == "30"
    assert argv[argv.index("--reset-limit") + 1] == "5"
    # only local hosts: horovodrun would otherwise wait for a second host to find a NIC
    assert argv[argv.index("--network-interface") + 1] == "lo"
    assert argv[-3:] == [str(layout.root), "--", "train"]  # under the rank wrapper
    assert PLAN_ENV not in command.env  # ranks come and go: no fixed placement
    assert manual_commands(plan, ["train"], settings) == {}


def test_remote_hosts_get_no_loopback_interface(tmp_path: Path) -> None:
    plan = make_plan(PlacementRequest(hosts="node1:2,node2:2", np=4))
    command = job_command(plan, ["train"], LaunchSettings(elastic=ElasticSettings(2, 4)),
                          RunLayout(tmp_path))
    assert "--network-interface" not in command.argv
    assert "--max-np" in command.argv and "--reset-limit" not in command.argv


@pytest.mark.parametrize(("launcher", "controller", "flag"), [
    ("mpirun", "auto", "--launcher mpirun"), ("auto", "mpi", "--controller mpi")])
def test_elastic_refuses_mpi(tmp_path: Path, launcher: str, controller: str, flag: str) -> None:
    plan, _ = _plan(tmp_path, "localhost slots=2\n", 2)
    settings = LaunchSettings(launcher, controller, elastic=ElasticSettings())
    with pytest.raises(ConfigError, match=f"--elastic needs horovodrun with Gloo; {flag}"):
        job_command(plan, ["train"], settings, RunLayout(tmp_path))


@pytest.mark.parametrize(("settings", "np_", "message"), [
    (ElasticSettings(min_np=3), 2, "-np 2 is below --min-np 3"),
    (ElasticSettings(max_np=1), 2, "-np 2 is above --max-np 1"),
])
def test_np_must_lie_between_min_and_max(tmp_path: Path, settings: ElasticSettings, np_: int,
                                         message: str) -> None:
    plan, _ = _plan(tmp_path, "localhost slots=4\n", np_)
    with pytest.raises(ConfigError, match=message):
        job_command(plan, ["train"], LaunchSettings(elastic=settings), RunLayout(tmp_path))


@pytest.mark.parametrize(("kw", "message"), [
    ({"min_np": 3, "max_np": 2}, "--min-np 3 is above --max-np 2"),
    ({"min_np": 0}, "--min-np must be >= 1"),
    ({"timeout": 0.0}, "--elastic-timeout must be > 0"),
    ({"reset_limit": -1}, "--reset-limit must be >= 0"),
])
def test_elastic_settings_validate(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ElasticSettings(**kw)


def test_elastic_options_need_elastic_and_the_whole_hostfile() -> None:
    base = {"elastic": False, "min_np": None, "max_np": None, "reset_limit": None,
            "elastic_timeout": 600.0, "hostfile": None, "include": None, "exclude": None}
    assert elastic_settings(base) is None
    with pytest.raises(ConfigError, match="--min-np needs --elastic"):
        elastic_settings({**base, "min_np": 2})
    with pytest.raises(ConfigError, match="--include/--exclude do not apply"):
        elastic_settings({**base, "elastic": True, "include": "h1"})
    assert elastic_settings({**base, "elastic": True, "max_np": 4}) == ElasticSettings(
        max_np=4)


# -- the supervisor ----------------------------------------------------------------------------
def _launcher(layout: RunLayout, script: str) -> LaunchCommand:
    """A shell standing in for horovodrun: it starts wrapped ranks, then does ``script``."""
    rank = shlex.join(layout.wrap([sys.executable, "-c", "import sys; sys.exit(3)"]))
    ok = shlex.join(layout.wrap([sys.executable, "-c", "import time; time.sleep(1)"]))
    return LaunchCommand(["sh", "-c", f"OMPI_COMM_WORLD_RANK=1 {rank} &\n"
                          f"OMPI_COMM_WORLD_RANK=0 {ok}\nwait\n{script}"])


def _run(tmp_path: Path, script: str, watchdog: Watchdog) -> tuple[Any, str]:
    layout = RunLayout(tmp_path)
    report = StringIO()
    try:
        return run_job(_launcher(layout, script), 2, layout, watchdog, report=report), ""
    except RankFailedError as exc:
        return exc, report.getvalue()


def test_elastic_supervision_ignores_a_failed_rank_the_launcher_survived(
        tmp_path: Path) -> None:
    result, report = _run(tmp_path, "exit 0", ELASTIC)
    assert isinstance(result, JobResult), report
    assert sorted((e.rank, e.exit_code) for e in result.ranks) == [(0, 0), (1, 3)]
    # the same job without the elastic flag fails on rank 1
    plain, report = _run(tmp_path / "plain", "exit 0", Watchdog(start_timeout=20, grace=2,
                                                                 poll_interval=0.05))
    assert isinstance(plain, RankFailedError) and plain.exit_code == 3
    assert "rank 1 on" in report


def test_below_min_np_is_one_clear_line_with_the_resume_hint(tmp_path: Path) -> None:
    said = ("echo 'horovod.runner.common.util.timeout.TimeoutException: Timed out waiting "
            "for {activity}. Please check that you have enough resources to run at least 2 "
            "Horovod processes. Timeout after 10 seconds.' >&2; exit 1")  # horovodrun 0.28.1
    result, report = _run(tmp_path, said, ELASTIC)
    assert isinstance(result, RankFailedError) and result.exit_code == 1
    assert "the launcher's output" in report  # horovodrun's own words, in the report
    assert result.message == ("elastic: fewer than --min-np 2 slots left, and none came back "
                              "within --elastic-timeout; the job stopped")
    assert result.hint is not None and "--resume latest" in result.hint
    assert str(tmp_path) in result.hint


# -- LoopState ---------------------------------------------------------------------------------
@dataclass
class _Comm:
    rank: int = 0
    size: int = 3
    local_rank: int = 0
    local_size: int = 1
    sent: list[Any] = field(default_factory=list)

    def broadcast_object(self, value: Any, root: int = 0) -> Any:
        self.sent.append(value)
        return value


@dataclass
class _Adapter:
    comm: _Comm
    weights: float = 1.0
    broadcasts: int = 0

    def snapshot(self) -> Any:
        return self.weights

    def restore_snapshot(self, snapshot: Any) -> None:
        self.weights = snapshot

    def broadcast_state(self) -> None:
        self.broadcasts += 1


def test_loop_state_commits_restores_resets_and_syncs() -> None:
    from hvdtrain.training.elastic_loop import LoopState
    from hvdtrain.training.loop import Progress

    adapter = _Adapter(_Comm())
    state = LoopState(adapter)  # type: ignore[arg-type]
    mask = np.zeros(10, dtype=bool)
    mask[:4] = True
    state.commit_progress(Progress(epoch=1, consumed=mask))  # no host change: no interrupt
    adapter.weights = 2.0  # a step after the commit, then a rank fails
    state.progress = Progress(epoch=1)
    state.restore()
    assert adapter.weights == 1.0
    assert state.progress is not None and state.progress.consumed is not None
    assert int(state.progress.consumed.sum()) == 4
    adapter.comm.size = 2  # Horovod re-formed with fewer ranks
    state.reset()
    state.sync()
    assert adapter.broadcasts == 1
    progress, resets = adapter.comm.sent[-1]
    assert progress.epoch == 1
    assert [(r["old_world_size"], r["new_world_size"], r["reason"]) for r in resets] == [
        (3, 2, "a rank failed")]


def test_only_tensorflow_errors_about_horovod_are_lost_peers() -> None:
    from hvdtrain.training.elastic_loop import is_lost_peer

    lost = type("UnknownError", (Exception,), {"__module__": "tensorflow.python.framework"})
    assert is_lost_peer(lost("HorovodAllreduce failed: Gloo connection closed"))
    assert not is_lost_peer(lost("shapes do not match"))
    assert not is_lost_peer(RuntimeError("Horovod is sad"))


def test_an_elastic_rank_wrapper_keeps_a_replaced_ranks_log(tmp_path: Path) -> None:
    """A replacement reuses a lost rank's number: both logs are kept; a rank other than 0 is
    not echoed (until its worker says it is rank 0 now); no progress bars."""
    program = [sys.executable, "-c",
               "import os; print('worker', os.environ.get('TQDM_DISABLE'))"]
    env = {"HOROVOD_RANK": "1", "HOROVOD_ELASTIC": "1", "PATH": "/usr/bin:/bin"}
    for _ in range(2):
        done = subprocess.run([sys.executable, "-m", "hvdtrain.launch.rank_wrapper",
                               str(tmp_path), "--", *program], env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0 and "worker" not in done.stdout
    assert RunLayout(tmp_path).stdout_log(1).read_text() == "worker 1\nworker 1\n"


# -- one voice: what the terminal shows is what it shows without elastic ----------------------
def test_horovodruns_tags_and_its_own_lines_are_told_apart(tmp_path: Path) -> None:
    assert untag(b"[12]<stdout>:epoch 1/3  loss 0.5\n") == b"epoch 1/3  loss 0.5\n"
    assert untag(b"[0]<stderr>:Traceback\n") == b"Traceback\n"
    assert untag(b"Process 0 exit with status code 137.\n") is None
    assert split_voice(b"epoch 1\n") == (b"epoch 1\n", None)
    assert split_voice(voice_line(True)) == (b"", True)
    assert split_voice(b"partial" + voice_line(False)) == (b"partial\n", False)
    stream = BytesIO(b"[1]<stdout>:epoch 2/3\nProcess 0 exit with status code 137.\n"
                     b"[1]<stdout>:" + status_line("ready", {"rank": 1, "time": 1.0}))
    shown, log = BytesIO(), BytesIO()
    relay_status(stream, RunLayout(tmp_path), shown, log, ranks_only=True)
    assert shown.getvalue() == b"epoch 2/3\n"
    assert log.getvalue() == b"[1]<stdout>:epoch 2/3\nProcess 0 exit with status code 137.\n"
    assert RunLayout(tmp_path).ready() == {1}


# stands in for horovodrun elastic: starts each program as a rank (HOROVOD_RANK, HOROVOD_ELASTIC)
# and forwards its lines tagged as horovodrun does, then says something of its own
_HOROVODRUN = """
import os, subprocess, sys, threading
def forward(source, sink, tag):
    for line in iter(source.readline, b""):
        sink.write(tag + line)
        sink.flush()
procs, threads = [], []
for rank, program in enumerate(sys.argv[1:]):
    env = {**os.environ, "HOROVOD_RANK": str(rank), "HOROVOD_ELASTIC": "1"}
    proc = subprocess.Popen(program, shell=True, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    procs.append(proc)
    for source, sink, name in ((proc.stdout, sys.stdout.buffer, b"stdout"),
                               (proc.stderr, sys.stderr.buffer, b"stderr")):
        threads.append(threading.Thread(target=forward,
                                        args=(source, sink, b"[%d]<%s>:" % (rank, name))))
        threads[-1].start()
print("Process 0 exit with status code 137.", flush=True)
print("horovodrun: a note of its own", file=sys.stderr, flush=True)
for proc in procs:
    proc.wait()
for thread in threads:
    thread.join()
"""


def _worker(before: str, rank_0_now: bool, after: str) -> str:
    """A worker that prints, learns at a reset whether it is rank 0, and prints again."""
    code = ("import sys; from hvdtrain.launch.protocol import claim_voice; "
            f"print({before!r}); print({before + ' (stderr)'!r}, file=sys.stderr); "
            f"claim_voice({rank_0_now}); "
            f"print({after!r}); print({after + ' (stderr)'!r}, file=sys.stderr)")
    return f"{PY} -c {shlex.quote(code)}"


def test_elastic_shows_only_the_current_rank_0_and_no_tags(
        tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    """Rank numbers change on a reset: the worker started as rank 1 is rank 0 now and speaks,
    the one started as rank 0 goes quiet; horovodrun's own lines stay in launcher.log."""
    layout = RunLayout(tmp_path)
    ranks = [shlex.join(layout.wrap(shlex.split(program))) for program in (
        _worker("first rank 0 speaks", False, "first rank 0 now quiet"),
        _worker("first rank 1 quiet", True, "rank 0 now speaks"))]
    command = LaunchCommand([sys.executable, "-c", _HOROVODRUN, *ranks],
                            {JOB_DIR_ENV: str(tmp_path)})
    result = run_job(command, 2, layout, ELASTIC, report=StringIO())
    assert isinstance(result, JobResult)
    out, err = (stream.decode() for stream in capfdbinary.readouterr())
    assert sorted(out.splitlines()) == ["first rank 0 speaks", "rank 0 now speaks"]
    assert sorted(err.splitlines()) == ["first rank 0 speaks (stderr)",
                                        "rank 0 now speaks (stderr)"]
    launcher_log = layout.launcher_log.read_text()
    assert "Process 0 exit" in launcher_log and "a note of its own" in launcher_log
    # every line is in the rank's own log, as without elastic; the wrapper's cue is not
    assert layout.stdout_log(1).read_text() == "first rank 1 quiet\nrank 0 now speaks\n"
    assert layout.stderr_log(0).read_text() == ("first rank 0 speaks (stderr)\n"
                                                "first rank 0 now quiet (stderr)\n")
