"""``hvdtrain serve`` from start to drain: checks, load, warm-up, listen, drain on SIGTERM.

KServe's ``ModelServer`` holds the model registry and the V2 data plane; its REST app (FastAPI)
and its gRPC servicer speak the protocol. ``ModelServer.start`` is not used, because it binds
every interface unconditionally, reports ready before any warm-up, and ends a single-process
server on SIGTERM by re-raising the signal (exit 143). Here instead:

1. Every mistake that can be found before loading is a one-line ``HvdtrainError`` with its exit
   code (``loading.locate``, the options, ports already in use), before anything slow.
2. The model is loaded (a checkpoint exported first) and warmed up with one inference; only
   then is a port bound, so whatever answers is ready (``/v2/health/ready`` also says so).
3. uvicorn serves the front (``http.Front`` around KServe's app) on a socket bound here to
   ``--host``; gRPC, when asked for, beside it (``grpc_server``).
4. SIGTERM (or SIGINT): stop accepting at once (listeners closed, readiness 503), answer every
   request already accepted (uvicorn's graceful shutdown, gRPC's grace, then the batcher's
   drain), exit 0. A request still running at ``--drain-timeout`` is cancelled and the exit
   code is 124; a watchdog ends the process if even that hangs. A signal while loading ends
   it at once, with 0: nothing was accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn

from hvdtrain.errors import ConfigError, ExitCode
from hvdtrain.serving.loading import check_name, default_name, load, locate

log = logging.getLogger("hvdtrain.serve")
WATCHDOG_SLACK = 10.0  # seconds past --drain-timeout before the process is ended regardless


@dataclass(frozen=True)
class ServeRequest:
    checkpoint: str | None = None
    model_dir: str | None = None
    name: str | None = None
    host: str = "0.0.0.0"
    port: int = 8080
    grpc_port: int | None = None  # None: no gRPC
    max_batch_size: int = 64
    max_batch_delay_ms: float = 0.0
    batching: bool = True
    workers: int = 1
    drain_timeout: float = 30.0
    max_body_bytes: int = 16 * 1024 * 1024


def check_request(request: ServeRequest) -> None:
    for flag, value, least in (("--max-batch-size", request.max_batch_size, 1),
                               ("--workers", request.workers, 1),
                               ("--max-body-bytes", request.max_body_bytes, 1024)):
        if value < least:
            raise ConfigError(f"{flag} must be >= {least}, got {value}")
    for flag, number in (("--max-batch-delay-ms", request.max_batch_delay_ms),
                         ("--drain-timeout", request.drain_timeout)):
        if not 0 <= number < 3600:
            raise ConfigError(f"{flag} must be between 0 and 3600, got {number:g}")
    for flag, port in (("--port", request.port), ("--grpc-port", request.grpc_port)):
        if port is not None and not 0 <= port <= 65535:
            raise ConfigError(f"{flag} must be a port number 0..65535, got {port}")
    if request.grpc_port and request.grpc_port == request.port:
        raise ConfigError(f"--grpc-port {request.grpc_port} is --port too; give two ports")
    if request.name is not None:
        check_name(request.name)


def listen_socket(host: str, port: int, flag: str) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not listening yet), or a one-line error."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"{flag} {port}: cannot listen on {host} ({exc.strerror})",
                          hint="stop what listens there or choose another port (0 picks a "
                          "free one)") from None
    return sock


def check_ports(request: ServeRequest) -> None:
    """Both ports free, before the slow load (bound again, for real, after it)."""
    for flag, port in (("--port", request.port), ("--grpc-port", request.grpc_port)):
        if port:
            listen_socket(request.host, port, flag).close()


class _Stopped(Exception):
    """A signal while starting: nothing was accepted, so nothing to drain."""


def _stop_starting(signum: int, _frame: FrameType | None) -> None:
    raise _Stopped(signal.Signals(signum).name)


@contextlib.contextmanager
def _signals(handler: Any) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, old in saved.items():
            signal.signal(number, old)


def configure_logging() -> None:
    """Timestamped lines on stderr for the server's own records (the access log among
    them); KServe's per-request timing lines and uvicorn's access log off (ours replace
    them)."""
    ours = logging.getLogger("hvdtrain.serve")
    if not any(getattr(h, "_hvdtrain_serve", False) for h in ours.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: "
                                               "%(message)s"))
        handler._hvdtrain_serve = True  # type: ignore[attr-defined]
        ours.addHandler(handler)
    # the CLI's -v/-q set the ``hvdtrain`` logger's level (-q: warnings only, no access log)
    ours.setLevel(logging.getLogger("hvdtrain").level or logging.INFO)
    ours.propagate = False
    logging.getLogger("uvicorn.error").setLevel(max(ours.level, logging.INFO))
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers, uvicorn_access.propagate = [], False


def serve(request: ServeRequest) -> int:
    """Serve until a signal; the exit code (0: every accepted request was answered)."""
    check_request(request)
    try:
        with _signals(_stop_starting):
            source = locate(request.checkpoint, request.model_dir)
            name = request.name or default_name(source.card)
            check_ports(request)
            configure_logging()
            log.info("loading %s", source.card.describe())
            servable = load(source, request.workers)
            from hvdtrain.serving.kserve_api import ModelServer
            from hvdtrain.serving.model import ServedModel

            holder = ModelServer(http_port=request.port, grpc_port=request.grpc_port or 0,
                                 enable_grpc=False, grace_period=int(request.drain_timeout),
                                 enable_latency_logging=False)
            configure_logging()  # again: KServe configures logging on import and here
            model = ServedModel(name, servable, request.max_batch_size)
            model.load()  # the warm-up
            holder.register_model(model)
            sock = listen_socket(request.host, request.port, "--port")
            # everything loaded so far lives as long as the server: out of the collector's
            # sight, a full collection scans only what requests allocate (the frameworks and
            # KServe leave millions of objects, and a collection over them stalled every
            # request in flight for ~80 ms, the p99 of a busy server)
            gc.collect()
            gc.freeze()
    except _Stopped as stopped:
        log.info("%s while starting: stopped before serving anything", stopped)
        return 0
    with _signals(lambda *_: None):  # uvicorn handles them while it serves; re-raised: no-op
        return _run_loop(_serve(request, holder, model, sock))


def _run_loop(main: Coroutine[Any, Any, int]) -> int:
    """uvloop where installed (KServe brings it, as uvicorn's "auto" would pick it): the HTTP
    side, not the model, bounds a small model's throughput."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return int(uvloop.run(main))


async def _serve(request: ServeRequest, holder: Any, model: Any, sock: socket.socket) -> int:
    from hvdtrain.serving import grpc_server
    from hvdtrain.serving.batching import Batcher
    from hvdtrain.serving.http import Front, Lifecycle, install_error_handlers
    from hvdtrain.serving.kserve_api import RESTServer, app
    from hvdtrain.serving.metrics import metrics

    loop = asyncio.get_running_loop()
    stats = metrics()
    executor = ThreadPoolExecutor(request.workers, thread_name_prefix="hvdtrain-infer")
    batcher = Batcher(model.servable.run, executor, max_rows=request.max_batch_size,
                      max_delay=request.max_batch_delay_ms / 1e3,
                      concurrency=request.workers, coalesce=request.batching,
                      on_batch=stats.batch)
    stats.watch_queue(lambda: batcher.queued_rows, lambda: batcher.queued_requests)
    model.submit = batcher
    # KServe's REST app (its routes, middlewares, error handlers), served by our uvicorn
    RESTServer("kserve.model_server:app", holder.dataplane, holder.model_repository_extension,
               request.port).create_application()
    install_error_handlers(app)
    # KServe's timing middleware feeds only the per-request trace lines switched off above,
    # and matches each request against every route once more to name it: 10-15 % of a
    # request's CPU, measured in process
    app.user_middleware = [m for m in app.user_middleware
                           if getattr(m.cls, "__name__", "") != "TimingMiddleware"]
    lifecycle = Lifecycle()
    front = Front(app, holder.dataplane, {model.name: model}, request.max_body_bytes,
                  lifecycle, stats)
    config = uvicorn.Config(front, log_config=None, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=request.drain_timeout,  # type: ignore
                            timeout_keep_alive=5, loop="asyncio")
    grpc = None
    grpc_port = None
    if request.grpc_port is not None:
        grpc, grpc_port = await grpc_server.start(
            request.host, request.grpc_port, holder.dataplane,
            holder.model_repository_extension, request.max_body_bytes, stats)
    stopping: list[asyncio.Task[None]] = []

    def begin_drain(signum: int) -> None:
        if lifecycle.draining:
            return
        lifecycle.draining = True
        log.info("%s: draining (no new connections; answering the %d request(s) accepted, "
                 "for up to %gs)", signal.Signals(signum).name, lifecycle.inflight,
                 request.drain_timeout)
        watchdog = threading.Timer(request.drain_timeout + WATCHDOG_SLACK, _hard_exit)
        watchdog.daemon = True
        watchdog.start()
        if grpc is not None:
            loop.call_soon_threadsafe(
                lambda: stopping.append(loop.create_task(grpc.stop(request.drain_timeout))))

    http = _Uvicorn(config, begin_drain)
    host, port = sock.getsockname()[:2]
    log.info("serving %s version %s (%s) on http://%s:%s%s; batching %s; %d worker(s)",
             model.name, model.servable.version, model.servable.runtime, host, port,
             f" and gRPC port {grpc_port}" if grpc_port else "",
             f"up to {request.max_batch_size} rows / {request.max_batch_delay_ms:g} ms"
             if request.batching else "off", request.workers)
    try:
        await http.serve(sockets=[sock])
        await asyncio.gather(*stopping)
        if grpc is not None and not stopping:  # uvicorn stopped on its own (no signal)
            await grpc.stop(request.drain_timeout)
        try:
            await asyncio.wait_for(batcher.close(), request.drain_timeout + 1)
        except asyncio.TimeoutError:
            lifecycle.cut_off += batcher.queued_requests
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
    if lifecycle.cut_off:
        log.error("%d request(s) were still running at --drain-timeout %gs and were cut off",
                  lifecycle.cut_off, request.drain_timeout)
        return int(ExitCode.TIMEOUT)
    log.info("drained: every accepted request was answered")
    return 0


def _hard_exit() -> None:
    log.error("the drain did not end within --drain-timeout + %gs; exiting", WATCHDOG_SLACK)
    logging.shutdown()
    os._exit(int(ExitCode.TIMEOUT))


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, telling us when a signal starts its graceful shutdown."""

    def __init__(self, config: uvicorn.Config, on_signal: Callable[[int], None]) -> None:
        super().__init__(config)
        self.on_signal = on_signal

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self.on_signal(sig)
