"""``launch.lifeline``: a killed hvdtrain takes its launcher, wrappers and ranks with it.

Without Horovod or MPI: the "launcher" is ``sh -c`` starting the real rank wrapper per rank
(as in test_supervision.py), around ranks that ignore SIGTERM, like a training rank stuck in
its stop-at-the-next-step collective.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from hvdtrain.launch.lifeline import (
    launcher_death_signal,
    launcher_lost,
    output_closed,
    watch_launcher,
)
from tests.helpers.job_processes import (
    kill_launcher,
    leftovers_after,
    output,
    remove_leftovers,
    start_job,
    wait_for_ranks,
)

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not hasattr(select, "poll") or sys.platform != "linux",
                                reason="PR_SET_PDEATHSIG and poll are Linux's")


@pytest.mark.parametrize(("program", "sig"), [
    ("mpirun", signal.SIGTERM), ("/opt/openmpi/bin/mpirun", signal.SIGTERM),
    ("horovodrun", signal.SIGKILL), ("/venv/bin/horovodrun", signal.SIGKILL),
    ("sh", signal.SIGTERM)])
def test_each_launcher_gets_its_death_signal(program: str, sig: int) -> None:
    assert launcher_death_signal(program) == sig


def test_output_closed_once_nobody_can_read_it(tmp_path: Path) -> None:
    read, write = os.pipe()
    try:
        assert not output_closed(write)
        os.close(read)
        assert output_closed(write)
    finally:
        os.close(write)
    with (tmp_path / "file").open("wb") as file:
        assert not output_closed(file.fileno())  # a file is never "closed" in this sense


def test_a_live_parent_and_open_output_are_not_lost() -> None:
    read, write = os.pipe()
    try:
        assert launcher_lost(os.getppid(), write) is None
        assert launcher_lost(os.getppid() + 1, None) is not None  # "the parent changed"
    finally:
        os.close(read)
        os.close(write)


def test_the_watch_stops_the_child_once_the_output_channel_closes() -> None:
    """SIGTERM first; SIGKILL when the child has not ended ``grace`` seconds later."""
    read, write = os.pipe()
    sent: list[int] = []
    done = threading.Event()
    try:
        thread = watch_launcher(sent.append, done.is_set, fd=write, grace=0.3, interval=0.05)
        time.sleep(0.3)
        assert sent == []  # the launcher is there: nothing happens
        os.close(read)
        thread.join(timeout=5)
        assert sent == [signal.SIGTERM, signal.SIGKILL]
    finally:
        done.set()
        os.close(write)


def test_the_watch_ends_with_the_child_and_sends_nothing() -> None:
    read, write = os.pipe()
    sent: list[int] = []
    done = threading.Event()
    try:
        thread = watch_launcher(sent.append, done.is_set, fd=write, interval=0.05)
        done.set()
        thread.join(timeout=5)
        assert not thread.is_alive() and sent == []
    finally:
        os.close(read)
        os.close(write)


# A rank like a training rank stuck in its stop-at-the-next-step collective: deaf to SIGTERM.
DEAF_RANK = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    Path(sys.argv[1], f"rank-{os.environ['OMPI_COMM_WORLD_RANK']}.deaf").touch()
    time.sleep(300)
""")
DRIVER = textwrap.dedent("""
    import shlex, sys
    from pathlib import Path
    from hvdtrain.launch.argv import LaunchCommand
    from hvdtrain.launch.protocol import RunLayout
    from hvdtrain.launch.supervisor import Watchdog, run_job

    layout = RunLayout(Path(sys.argv[1]))
    rank = [sys.executable, sys.argv[2], sys.argv[3]]
    lines = [f"OMPI_COMM_WORLD_RANK={r} {shlex.join(layout.wrap(rank))} &" for r in range(2)]
    run_job(LaunchCommand(["sh", "-c", "\\n".join([*lines, "wait"])]), 2, layout,
            Watchdog(start_timeout=60))
""")


def test_a_killed_supervisor_leaves_no_launcher_wrapper_or_rank(tmp_path: Path) -> None:
    """SIGKILL to the supervisor: its launcher gets the death signal, the wrappers lose their
    parent and stop their ranks, with SIGKILL as these ignore SIGTERM."""
    driver, run_dir, out_dir = tmp_path / "driver.py", tmp_path / "run", tmp_path / "out"
    driver.write_text(DRIVER)
    (tmp_path / "deaf_rank.py").write_text(DEAF_RANK)
    deaf = tmp_path / "deaf"  # rank-N.deaf: rank N ignores SIGTERM from now on
    deaf.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("OMPI_COMM_WORLD_RANK", None)
    proc = start_job([sys.executable, str(driver), str(run_dir), str(tmp_path / "deaf_rank.py"),
                      str(deaf)], env, out_dir, cwd=REPO)
    try:
        wait_for_ranks(deaf, 2, "deaf", proc, 60, out_dir)
        kill_launcher(proc)
        left = leftovers_after(run_dir)
        assert left == {}, f"left after the supervisor was killed: {left}\n{output(out_dir)}"
        logs = "".join(path.read_text() for path in (run_dir / "logs").glob("*.err"))
        assert logs.count("launcher gone") == 2, logs
    finally:
        remove_leftovers(run_dir, proc)
