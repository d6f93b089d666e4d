"""What a user sees of a real two-rank run: a progress bar on a terminal, and in a log (CI,
Slurm output files, ``| tee``) plain lines without a carriage return.

The terminal is a pseudo-terminal (``os.openpty``) given to the launcher as stdout and stderr,
as a shell would; the ranks' own streams are pipes either way (the rank wrapper's).
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.jobs import hvdtrain, job_env

# about 15 steps of 0.1 s per epoch: a progress line every 0.5 s shows up in each epoch
QUICK = ("-np", "2", "--data", "breast-cancer", "--epochs", "2", "--batch-size", "16",
         "--step-delay", "0.1")
EPOCH_LINE = re.compile(r"^epoch [12]/2  loss ", re.M)
PROGRESS_LINE = re.compile(r"^epoch 1/2: \d+/\d+ steps \(\d+%\) in \d+ s, loss=", re.M)


def test_a_redirected_run_logs_plain_lines(tmp_path: Path) -> None:
    """``> job.log 2>&1``, as a batch system writes its output file (read as bytes: text
    mode would turn a carriage return into a newline)."""
    log = tmp_path / "job.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            hvdtrain("train", *QUICK, "--log-every-seconds", "0.5", "--run-dir",
                     str(tmp_path / "run")),
            env=job_env(), stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
            start_new_session=True)
        try:
            code = proc.wait(timeout=240)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"hung for 240 s\n{log.read_text(errors='replace')[-3000:]}")
    output = log.read_bytes().decode(errors="replace")
    assert code == 0, output[-3000:]
    assert "\r" not in output and "%|" not in output and "step/s" not in output, output
    assert len(EPOCH_LINE.findall(output)) == 2, output
    assert PROGRESS_LINE.search(output), output


def _run_on_a_terminal(argv: list[str], timeout: float) -> tuple[int, str]:
    screen, terminal = os.openpty()
    proc = subprocess.Popen(argv, env=job_env(), stdin=subprocess.DEVNULL, stdout=terminal,
                            stderr=terminal, start_new_session=True)
    os.close(terminal)
    shown, deadline = bytearray(), time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([screen], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(screen, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        else:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"{argv} hung for {timeout} s\n{shown.decode(errors='replace')[-3000:]}")
        return proc.wait(timeout=30), shown.decode(errors="replace")
    finally:
        os.close(screen)


def test_a_terminal_shows_the_bar(tmp_path: Path) -> None:
    code, shown = _run_on_a_terminal(
        hvdtrain("train", *QUICK, "--log-every-seconds", "0.5", "--run-dir",
                 str(tmp_path / "run")), timeout=240)
    assert code == 0, shown[-3000:]
    assert "%|" in shown and "step/s" in shown, shown  # tqdm's bar
    # (a terminal ends lines with \r\n itself; the bar's own \r may precede an epoch line)
    lines = shown.replace("\r", "\n")
    assert lines.count("epoch 1/2  loss ") == lines.count("epoch 2/2  loss ") == 1, shown
    assert not PROGRESS_LINE.search(lines), shown  # no log lines
