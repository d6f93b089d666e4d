"""The gRPC side (``--grpc-port``): KServe's V2 servicer on a server bound where we say.

KServe's own ``GRPCServer`` always binds ``[::]`` and lets a second server share the port
(``SO_REUSEPORT``); this one binds ``--host`` only, refuses a port in use, caps a message at
``--max-body-bytes``, and gives every call the access-log line and metrics that HTTP requests
get. Errors are KServe's mapping (a bad request is INVALID_ARGUMENT, an unknown model
NOT_FOUND).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from hvdtrain.errors import ConfigError
from hvdtrain.serving.kserve_api import (
    ExceptionToStatusInterceptor,
    InferenceServicer,
    grpc_predict_v2_pb2_grpc,
)
from hvdtrain.serving.metrics import Metrics

ENDPOINTS = {"ModelInfer": "infer", "ModelMetadata": "model_metadata",
             "ModelReady": "model_ready", "ServerReady": "ready", "ServerLive": "live",
             "ServerMetadata": "server_metadata"}
access_log = logging.getLogger("hvdtrain.serve.access")


class Observe(aio.ServerInterceptor):
    """An access-log line and the request metrics for every unary call."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner, method = handler.unary_unary, str(details.method)
        endpoint = ENDPOINTS.get(method.rsplit("/", 1)[-1], "other")

        async def observed(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            failed = False
            try:
                return await inner(request, context)
            except BaseException:
                failed = True
                raise
            finally:
                code = context.code()
                status = code.name if code is not None else ("UNKNOWN" if failed else "OK")
                seconds = time.perf_counter() - started
                self.metrics.observe("grpc", endpoint, status, seconds)
                access_log.info('%s "gRPC %s" %s %.2fms', context.peer(), method, status,
                                seconds * 1e3)

        return grpc.unary_unary_rpc_method_handler(
            observed, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


async def start(host: str, port: int, dataplane: Any, repository: Any, max_message: int,
                metrics: Metrics) -> tuple[aio.Server, int]:
    """The started server and the port it listens on."""
    server = aio.server(interceptors=(Observe(metrics), ExceptionToStatusInterceptor()),
                        options=[("grpc.so_reuseport", 0),
                                 ("grpc.max_receive_message_length", max_message),
                                 ("grpc.max_send_message_length", -1)])
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceServicer(dataplane, repository), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        raise ConfigError(f"--grpc-port {port}: cannot listen on {address} (in use?)",
                          hint="choose another port, or stop what listens there")
    await server.start()
    return server, bound
