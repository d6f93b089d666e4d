"""Progress output: a bar on a terminal, plain lines (no carriage returns) anywhere else.

A terminal is made with ``os.openpty``; "anywhere else" is a pipe or a file. The launcher's
word (``TERMINAL_ENV``) decides for a rank, whose own stderr is a pipe to its wrapper.
"""

from __future__ import annotations

import fcntl
import io
import os
import struct
import sys
import termios
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from hvdtrain.cluster.planning import PlacementRequest, make_plan
from hvdtrain.config import TrainConfig
from hvdtrain.errors import ConfigError
from hvdtrain.launch.elastic_hosts import ElasticSettings
from hvdtrain.launch.job import LaunchSettings, job_command
from hvdtrain.launch.protocol import TERMINAL_ENV, RunLayout, terminal_environment
from hvdtrain.training.progress import LogProgress, on_terminal, progress


@pytest.fixture
def terminal() -> Iterator[tuple[IO[str], int]]:
    """(the terminal's side a program writes to, the fd its screen is read from)."""
    screen, program_side = os.openpty()
    fcntl.ioctl(program_side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    with os.fdopen(program_side, "w") as stream:
        yield stream, screen
    os.close(screen)


def _screen(fd: int) -> str:
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except (BlockingIOError, OSError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_log_gets_a_plain_line_every_n_seconds_and_no_carriage_return() -> None:
    out, clock = io.StringIO(), _Clock()
    bar = LogProgress("epoch 2/5", 4000, "step", 30.0, out, clock)
    for step in range(4000):
        clock.now += 0.025  # 100 s in all: lines at 30, 60 and 90 s
        bar.set_postfix(loss=f"{1000 / (step + 1):.4f}", samples_s="1,280", refresh=False)
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines == [
        "epoch 2/5: 1,200/4,000 steps (30%) in 30 s, loss=0.8333, samples_s=1,280",
        "epoch 2/5: 2,400/4,000 steps (60%) in 60 s, loss=0.4167, samples_s=1,280",
        "epoch 2/5: 3,600/4,000 steps (90%) in 90 s, loss=0.2778, samples_s=1,280"]
    assert "\r" not in out.getvalue()


def test_a_short_epoch_or_every_zero_writes_nothing() -> None:
    for every in (30.0, 0.0):
        out, clock = io.StringIO(), _Clock()
        bar = LogProgress("epoch 1/1", 10, "step", every, out, clock)
        for _ in range(10):
            clock.now += 5.0 if every == 0 else 0.1
            bar.update(1)
        bar.close()
        assert out.getvalue() == ""


def test_the_last_step_writes_no_line_the_epochs_own_line_follows() -> None:
    out, clock = io.StringIO(), _Clock()
    bar = LogProgress("epoch 1/1", 2, "step", 1.0, out, clock)
    for _ in range(2):
        clock.now += 1.0
        bar.update(1)
    assert out.getvalue() == "epoch 1/1: 1/2 steps (50%) in 1 s\n"


def test_without_a_total_the_line_counts() -> None:
    out, clock = io.StringIO(), _Clock()
    bar = LogProgress("predict", None, "sample", 1.0, out, clock)
    clock.now += 2
    bar.update(2048)
    assert out.getvalue() == "predict: 2,048 samples in 2 s\n"


def test_a_redirected_stream_gets_lines_not_a_bar(tmp_path: Path) -> None:
    with (tmp_path / "log").open("w") as log:
        assert not on_terminal({}, log)
        bar = progress("epoch 1/3", 5, "step", 30.0, env={}, stream=log)
        assert isinstance(bar, LogProgress)
        for _ in range(5):
            bar.update(1)
        bar.close()
    assert "\r" not in (tmp_path / "log").read_text()


def test_a_terminal_gets_the_bar(terminal: tuple[IO[str], int]) -> None:
    pytest.importorskip("tqdm")
    stream, screen = terminal
    assert on_terminal({}, stream)
    bar = progress("epoch 1/3", 5, "step", 30.0, env={}, stream=stream)
    assert not isinstance(bar, LogProgress)
    for _ in range(5):
        bar.update(1)
    bar.close()
    stream.flush()
    shown = _screen(screen)
    assert "epoch 1/3" in shown and "step" in shown and "\r" in shown


def test_the_launchers_word_wins_over_the_ranks_own_stream(
        terminal: tuple[IO[str], int]) -> None:
    """A rank's stderr is a pipe to its wrapper even when the user watches a terminal, and a
    terminal of its own means nothing when the launcher's output is a file."""
    stream, _ = terminal
    assert on_terminal({TERMINAL_ENV: "1"}, io.StringIO())
    assert not on_terminal({TERMINAL_ENV: "0"}, stream)
    assert isinstance(progress("x", 1, "step", env={TERMINAL_ENV: "0"}, stream=stream),
                      LogProgress)


def test_the_launcher_tells_its_ranks_whether_its_stderr_is_a_terminal(
        tmp_path: Path, terminal: tuple[IO[str], int], monkeypatch: pytest.MonkeyPatch) -> None:
    stream, _ = terminal
    assert terminal_environment(stream) == {TERMINAL_ENV: "1"}
    assert terminal_environment(io.StringIO()) == {}
    plan = make_plan(PlacementRequest(hosts="localhost:2", np=2))
    layout = RunLayout(tmp_path)
    mpirun = LaunchSettings("mpirun", "mpi", mpi_flavour="openmpi")
    monkeypatch.setattr(sys, "stderr", stream)
    command = job_command(plan, ["train"], mpirun, layout)
    assert command.env[TERMINAL_ENV] == "1"
    assert command.argv[command.argv.index(TERMINAL_ENV) - 1] == "-x"  # to every host
    # elastic: horovodrun forwards line by line, a bar cannot be drawn through it
    elastic = job_command(plan, ["train"], LaunchSettings(elastic=ElasticSettings()), layout)
    assert TERMINAL_ENV not in elastic.env
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert TERMINAL_ENV not in job_command(plan, ["train"], mpirun, layout).env


def test_log_every_seconds_is_validated() -> None:
    assert TrainConfig().log_every_seconds == 30.0
    with pytest.raises(ConfigError, match="--log-every-seconds must be >= 0, got -1"):
        TrainConfig(log_every_seconds=-1.0)


def test_rank_0s_epoch_progress_in_a_log_has_no_bar_debris(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What the training loop gets from rank 0's recorder, with stderr not a terminal."""
    pytest.importorskip("tensorboardX")  # the event writer of a framework-free run
    pytest.importorskip("tqdm")
    from hvdtrain.training.events import ChiefRecorder

    chief = ChiefRecorder(tmp_path, 10, log_every_seconds=30.0)
    try:
        bar = chief.progress(9, 103)
        for _ in range(103):
            bar.set_postfix(loss="0.1000", samples_s="900", refresh=False)
            bar.update(1)
        bar.close()
    finally:
        chief.close()
    err = capsys.readouterr().err
    assert "\r" not in err and "%|" not in err and "step/s" not in err


def test_no_protocol_variable_is_an_options_mirror() -> None:
    """``HVDTRAIN_<OPTION>`` sets an option; a protocol variable must never be one (a future
    ``--launcher-tty`` option would otherwise change what the ranks are told)."""
    import click

    from hvdtrain.commands import main
    from hvdtrain.launch.protocol import PROTOCOL_VARIABLES

    def mirrors(command: click.Command) -> set[str]:
        found = {str(p.envvar) for p in command.params if isinstance(p, click.Option)
                 and p.envvar}
        for sub in getattr(command, "commands", {}).values():
            found |= mirrors(sub)
        return found

    every = mirrors(main)
    assert "HVDTRAIN_LOG_EVERY_SECONDS" in every
    assert not every & set(PROTOCOL_VARIABLES)
