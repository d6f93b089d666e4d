"""The thin process every launcher starts per rank: ``python -m hvdtrain.launch.rank_wrapper``.

Why a wrapper: horovodrun and mpirun report *that* something failed, rarely *which* rank, on
which host, with what stderr. The wrapper runs the real program as a child and records, in
the run directory (``launch.protocol.RunLayout``), that its rank started (pid, host) and how it
ended (exit code, signal). The supervisor reads those records to name the first failing rank
and to stop the rest.

Every record is also printed as one status line on the wrapper's stdout, which the launcher
forwards to the supervisor: that is how the supervisor learns about ranks on hosts that do not
share its run directory. "Horovod is initialised" is written by the worker (the child) into
the local layout; a small watcher here relays it the same way.

It also preloads tcmalloc into the child where this host has it (``launch.allocator``:
large tensors otherwise page-fault on every step), points Open MPI ranks of multi-host plans
at Open MPI's allreduce rules for large buffers (``launch.mpi_tuning``), and makes orphans
impossible: the child is killed if the wrapper dies (``PR_SET_PDEATHSIG``), the wrapper is
terminated if its parent dies, and once its launcher is gone (its parent or its stdout channel,
``launch.lifeline.watch_launcher``: orted or a remote shell may outlive a killed launcher) the
child gets SIGTERM and then SIGKILL; SIGINT/SIGTERM are forwarded. Rank 0's output is shown
live; every rank's stdout and stderr are kept under ``<run_dir>/logs/``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from hvdtrain.cluster.pinning import decode_plan
from hvdtrain.errors import ExitCode
from hvdtrain.launch.allocator import ALLOCATOR_ENV, chosen_library, setting, with_allocator
from hvdtrain.launch.lifeline import die_with_parent, watch_launcher
from hvdtrain.launch.mpi_tuning import (
    RULES_FILE,
    RULES_FROM_BYTES,
    rules_for_plan,
    with_allreduce_rules,
)
from hvdtrain.launch.network import interface_in, interface_towards
from hvdtrain.launch.protocol import (
    NETWORK_ENV,
    PLAN_ENV,
    RENDEZVOUS_ENV,
    RankExit,
    RankStart,
    RunLayout,
    split_voice,
    status_line,
    tail,
)
from hvdtrain.launch.rank_env import detect_rank
from hvdtrain.launch.streams import start_pump, start_pump_lines

TAIL_LINES = 15
_stdout_lock = threading.Lock()


def _announce(event: str, record: Mapping[str, object]) -> None:
    """Print one record for the supervisor (through the launcher's stdout forwarding)."""
    with _stdout_lock:
        try:
            sys.stdout.buffer.write(status_line(event, record))
            sys.stdout.buffer.flush()
        except (ValueError, OSError):
            pass


def _relay_ready(layout: RunLayout, rank: int, child: subprocess.Popen[bytes]) -> None:
    ready = layout.status_file(rank, "ready")
    while child.poll() is None:
        if ready.exists():
            _announce("ready", {"rank": rank, "time": time.time()})
            return
        time.sleep(0.2)


def child_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The program's environment: ours, except that under horovodrun's Gloo the rendezvous
    address becomes the one hvdtrain's launcher found reachable, and the interface this
    host's own one in the chosen network, or on its route to the launcher (``launch.network``
    says why)."""
    child = dict(env)
    wanted = env.get(RENDEZVOUS_ENV)
    if wanted and "HOROVOD_GLOO_RENDEZVOUS_ADDR" in env:
        child["HOROVOD_GLOO_RENDEZVOUS_ADDR"] = wanted
    network = env.get(NETWORK_ENV)
    inside = interface_in(network) if network else None
    interface = inside[0] if inside else (interface_towards(wanted) if wanted else None)
    if interface and ("HOROVOD_GLOO_RENDEZVOUS_ADDR" in env or network):
        child["HOROVOD_GLOO_IFACE"] = interface
    if env.get("HOROVOD_ELASTIC") == "1":
        # horovodrun forwards output line by line: a progress bar redrawn with \r would
        # arrive as one long line at the epoch's end (the epoch lines say the same)
        child.setdefault("TQDM_DISABLE", "1")
        # a user's Python script writing into a pipe would hold its lines until it exits
        child.setdefault("PYTHONUNBUFFERED", "1")
    return child


def what_it_adds(environ: Mapping[str, str], hosts: int, open_mpi: bool) -> list[str]:
    """For ``--dry-run``: what each host's wrapper adds to its ranks beyond the command."""
    library = chosen_library(environ)
    added = [f"LD_PRELOAD={library} where that file exists" if library else
             f"glibc malloc ({ALLOCATOR_ENV}={setting(environ)})"]
    if open_mpi and rules_for_plan(environ, hosts):
        added.append(f"Open MPI allreduce from {RULES_FROM_BYTES >> 20} MiB: recursive doubling "
                     f"on 2 ranks, the ring on 3+ ({RULES_FILE})")
    return added


def _hosts_in_plan(env: Mapping[str, str]) -> int:
    plan = decode_plan(env.get(PLAN_ENV))
    return len({host for host, _, _ in plan}) if plan else 1


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

    die_with_parent(signal.SIGTERM)
    started = time.time()
    # Horovod elastic starts a replacement under a rank number a lost rank had: keep both
    # logs. Its ranks are renumbered on every reset: the worker says when it is rank 0
    # (``protocol.claim_voice``), and its output is echoed only then; the supervisor shows
    # the launcher's stream, which carries it.
    elastic = os.environ.get("HOROVOD_ELASTIC") == "1"
    mode = "ab" if elastic else "wb"
    with layout.stdout_log(rank).open(mode) as out, layout.stderr_log(rank).open(mode) as err:
        env, warning = with_allocator(child_environment(os.environ))
        env = with_allreduce_rules(env, layout.ranks_dir, _hosts_in_plan(os.environ))
        if warning:
            err.write(f"hvdtrain: {warning}\n".encode())
        me = os.getpid()
        try:
            child = subprocess.Popen(program, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env,
                                     preexec_fn=lambda: die_with_parent(signal.SIGKILL, me))
        except OSError as exc:
            message = f"cannot start {program[0]!r}: {exc}"
            err.write(f"{message}\n".encode())
            _finish(layout, RankExit(rank, host, ExitCode.CANNOT_START, None, time.time(), message,
                                     f"{host}:{layout.logs_dir}"))
            return ExitCode.CANNOT_START
        start = RankStart(rank, host, os.getpid(), child.pid, started)
        layout.write_start(start)
        _announce("start", asdict(start))
        threading.Thread(target=_relay_ready, args=(layout, rank, child), daemon=True).start()

        def launcher_gone(why: str) -> None:
            try:
                err.write(f"hvdtrain: launcher gone ({why}): stopping rank {rank}\n".encode())
            except (ValueError, OSError):  # the rank ended meanwhile and the log is closed
                pass

        watch_launcher(child.send_signal, lambda: child.returncode is not None, launcher_gone)

        def forward(signum: int, _frame: object) -> None:
            if child.poll() is None:
                child.send_signal(signum)

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, forward)

        echo = rank == 0
        if elastic:  # until the worker says otherwise (``split_voice``)
            pumps = [start_pump_lines(child.stdout, out, sys.stdout.buffer, split_voice, echo),
                     start_pump_lines(child.stderr, err, sys.stderr.buffer, split_voice, echo)]
        else:
            pumps = [start_pump(child.stdout, out, sys.stdout.buffer if echo else None),
                     start_pump(child.stderr, err, sys.stderr.buffer if echo else None)]
        code = child.wait()
        for thread in pumps:
            thread.join()

    exit_code, killed_by = exit_status(code)
    _finish(layout, RankExit(rank, host, exit_code, killed_by, time.time(),
                             tail(layout.stderr_log(rank), TAIL_LINES) if exit_code else "",
                             f"{host}:{layout.logs_dir}"))
    return exit_code


def _finish(layout: RunLayout, done: RankExit) -> None:
    layout.write_exit(done)
    _announce("exit", asdict(done))


if __name__ == "__main__":
    sys.exit(main())
