"""The thin process every launcher starts per rank: ``python -m hvdtrain.launch.rank_wrapper``.

Why a wrapper: horovodrun and mpirun report *that* something failed, rarely *which* rank, on
which host, with what stderr. The wrapper runs the real program as a child and records, in
the run directory, that its rank started (pid, host) and how it ended (exit code, signal).
The supervising runner reads those files to name the first failing rank and to stop the rest.

It also makes orphans impossible: the child is killed if the wrapper dies
(``PR_SET_PDEATHSIG``), the wrapper is terminated if its launcher dies, and SIGINT/SIGTERM
are forwarded. Rank 0's output is shown live; every rank's stdout and stderr are kept under
``<run_dir>/logs/``.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from hvdtrain.launch.rank_env import detect_rank

PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int) -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    except OSError:  # not Linux: best effort only
        pass


STATUS_DIR_ENV = "HVDTRAIN_STATUS_DIR"


def mark_ready(rank: int) -> None:
    """Called by a worker once Horovod is initialised: the end of its start-up."""
    status_dir = os.environ.get(STATUS_DIR_ENV)
    if status_dir:
        _write_json(Path(status_dir) / f"rank-{rank}.ready.json",
                    {"rank": rank, "time": time.time()})


def _write_json(path: Path, payload: dict[str, object]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def _pump(source: IO[bytes], sink: IO[bytes], echo: IO[bytes] | None) -> None:
    for chunk in iter(lambda: source.read1(65536), b""):  # type: ignore[attr-defined]
        sink.write(chunk)
        sink.flush()
        if echo is not None:
            echo.write(chunk)
            echo.flush()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m hvdtrain.launch.rank_wrapper RUN_DIR -- PROGRAM [ARGS...]",
              file=sys.stderr)
        return 2
    run_dir, program = Path(args[0]), args[2:]
    found = detect_rank()
    rank = found.rank if found else 0
    host = os.environ.get("HOROVOD_HOSTNAME") or socket.gethostname()
    status_dir, log_dir = run_dir / "ranks", run_dir / "logs"
    status_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)

    _die_with_parent(signal.SIGTERM)
    started = time.time()
    with (log_dir / f"rank-{rank}.out").open("wb") as out, (
        log_dir / f"rank-{rank}.err"
    ).open("wb") as err:
        try:
            child = subprocess.Popen(
                program,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                preexec_fn=lambda: _die_with_parent(signal.SIGKILL),
            )
        except OSError as exc:
            err.write(f"cannot start {program[0]!r}: {exc}\n".encode())
            _write_json(status_dir / f"rank-{rank}.exit.json",
                        {"rank": rank, "host": host, "exit_code": 127, "signal": None,
                         "time": time.time()})
            return 127
        _write_json(status_dir / f"rank-{rank}.start.json",
                    {"rank": rank, "host": host, "pid": os.getpid(), "child_pid": child.pid,
                     "time": started})

        def forward(signum: int, _frame: object) -> None:
            if child.poll() is None:
                child.send_signal(signum)

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, forward)

        echo = rank == 0
        pumps = [
            threading.Thread(target=_pump, args=(child.stdout, out,
                                                 sys.stdout.buffer if echo else None)),
            threading.Thread(target=_pump, args=(child.stderr, err,
                                                 sys.stderr.buffer if echo else None)),
        ]
        for pump in pumps:
            pump.start()
        code = child.wait()
        for pump in pumps:
            pump.join()

    exit_code, killed_by = (code, None) if code >= 0 else (128 - code, -code)
    _write_json(status_dir / f"rank-{rank}.exit.json",
                {"rank": rank, "host": host, "exit_code": exit_code, "signal": killed_by,
                 "time": time.time()})
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
