"""The thin process every launcher starts per rank: ``python -m hvdtrain.launch.rank_wrapper``.

Why a wrapper: horovodrun and mpirun report *that* something failed, rarely *which* rank, on
which host, with what stderr. The wrapper runs the real program as a child and records, in
the run directory (``launch.protocol.RunLayout``), that its rank started (pid, host) and how it
ended (exit code, signal). The supervisor reads those records to name the first failing rank
and to stop the rest.

It also makes orphans impossible: the child is killed if the wrapper dies
(``PR_SET_PDEATHSIG``), the wrapper is terminated if its launcher dies, and SIGINT/SIGTERM
are forwarded. Rank 0's output is shown live; every rank's stdout and stderr are kept under
``<run_dir>/logs/``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from hvdtrain.launch.protocol import RankExit, RankStart, RunLayout
from hvdtrain.launch.rank_env import detect_rank
from hvdtrain.launch.streams import start_pump

PR_SET_PDEATHSIG = 1
EXIT_CANNOT_START = 127  # like a shell's "command not found"


def _die_with_parent(sig: int) -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    except OSError:  # not Linux: best effort only
        pass


def exit_status(returncode: int) -> tuple[int, int | None]:
    """Popen's return code → (exit code as a shell reports it, killing signal or None)."""
    return (returncode, None) if returncode >= 0 else (128 - returncode, -returncode)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--":
        print(f"usage: python -m {__spec__.name if __spec__ else 'rank_wrapper'} RUN_DIR -- "
              "PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    layout, program = RunLayout(Path(args[0])), args[2:]
    found = detect_rank()
    rank = found.rank if found else 0
    host = os.environ.get("HOROVOD_HOSTNAME") or socket.gethostname()
    layout.ranks_dir.mkdir(parents=True, exist_ok=True)
    layout.logs_dir.mkdir(parents=True, exist_ok=True)

    _die_with_parent(signal.SIGTERM)
    started = time.time()
    with layout.stdout_log(rank).open("wb") as out, layout.stderr_log(rank).open("wb") as err:
        try:
            child = subprocess.Popen(program, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     preexec_fn=lambda: _die_with_parent(signal.SIGKILL))
        except OSError as exc:
            err.write(f"cannot start {program[0]!r}: {exc}\n".encode())
            layout.write_exit(RankExit(rank, host, EXIT_CANNOT_START, None, time.time()))
            return EXIT_CANNOT_START
        layout.write_start(RankStart(rank, host, os.getpid(), child.pid, started))

        def forward(signum: int, _frame: object) -> None:
            if child.poll() is None:
                child.send_signal(signum)

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, forward)

        echo = rank == 0
        pumps = [start_pump(child.stdout, out, sys.stdout.buffer if echo else None),
                 start_pump(child.stderr, err, sys.stderr.buffer if echo else None)]
        code = child.wait()
        for thread in pumps:
            thread.join()

    exit_code, killed_by = exit_status(code)
    layout.write_exit(RankExit(rank, host, exit_code, killed_by, time.time()))
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
