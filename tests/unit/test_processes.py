"""``launch.processes``: a bounded command is stopped with everything it started, and stopping
a process that is already gone is no error."""

from __future__ import annotations

import signal
import subprocess
import time

from hvdtrain.launch.processes import alive, run_bounded, signal_group, signal_process


def test_run_bounded_kills_the_whole_process_group() -> None:
    start = time.monotonic()
    # The grandchild holds the pipes: communicate() would wait for it unless it is killed too.
    ran = run_bounded(["sh", "-c", "sleep 60 & sleep 60"], timeout=0.5)
    assert ran.returncode is None
    assert time.monotonic() - start < 10


def test_signalling_what_is_gone_is_no_error_and_a_zombie_is_not_alive() -> None:
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    assert alive(proc.pid)
    signal_group(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(proc.pid):  # a zombie until waited for: gone all the same
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.wait()
    signal_group(proc.pid, signal.SIGKILL)
    signal_process(proc.pid, signal.SIGTERM)
    assert not alive(proc.pid)
