"""The HTTP front: a thin ASGI layer in front of KServe's REST app, for what KServe's own routes
do not do.

* **Limits and accounting** for every request: a body over ``--max-body-bytes`` is refused with
  413 before it is read whole; one access-log line per request; the request counters and
  latency histogram (``metrics``); requests cut off by the drain's deadline are counted.
* **Readiness**: ``/v2/health/ready`` is 200 only when every model has loaded and warmed up and
  the server is not draining (KServe's answers 200 as soon as it listens).
* **Versions**: KServe 0.21 answers 501 to any ``/versions/V`` path. Here the model's version
  (the epoch it was trained to) is accepted and the path handed on without it; another
  version is a 404.
* **Metadata**: ``GET /v2/models/NAME`` gives the protocol's fields plus ``versions`` and
  ``parameters`` (class names, training data and metrics), which KServe's response model drops.
* **Inference** goes straight to KServe's data plane (``infer``): the body decoded by
  KServe's own request model and decoder (JSON, or the binary-data extension Triton's clients
  use), the model called through the data plane, the response encoded by it. Measured in
  process, FastAPI's routing, dependency solving and response re-validation were 80 % of a
  request's CPU (KServe's REST app declares some 30 routes, matched one by one), and a small
  model's throughput is bounded by exactly that (docs/BENCHMARKS.md). A body without the
  binary-data header is JSON whatever its content type says (so ``curl -d`` works).
* Every error is the protocol's error object ``{"error": "..."}``: 400 for a malformed body
  (never FastAPI's 422 ``{"detail": ...}``), 404 for an unknown model or version
  (``install_error_handlers`` for the routes KServe's app answers).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from hvdtrain.serving.metrics import Metrics
from hvdtrain.serving.model import ServedModel

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

MODEL_PATH = re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?"
                        r"(?P<verb>/ready|/infer)?")
BINARY_HEADER = b"inference-header-content-length"
access_log = logging.getLogger("hvdtrain.serve.access")
log = logging.getLogger("hvdtrain.serve")


@dataclass
class Lifecycle:
    """What the server is doing, shared by the front and the signal handling."""

    draining: bool = False
    inflight: int = 0  # HTTP requests being answered
    cut_off: int = 0  # requests cancelled by the drain's deadline


def endpoint_of(path: str) -> str:
    """A fixed label for a path (metrics never carry the path itself)."""
    found = MODEL_PATH.fullmatch(path)
    if found:
        verb = found["verb"]
        return "infer" if verb == "/infer" else "model_ready" if verb else "model_metadata"
    return {"/v2/health/live": "live", "/v2/health/ready": "ready", "/v2": "server_metadata",
            "/metrics": "metrics", "/v2/models": "models"}.get(path, "other")


class Front:
    def __init__(self, app: App, dataplane: Any, models: Mapping[str, ServedModel],
                 max_body: int, lifecycle: Lifecycle, metrics: Metrics) -> None:
        self.app, self.dataplane, self.models = app, dataplane, models
        self.max_body, self.lifecycle, self.metrics = max_body, lifecycle, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        sent = {"status": 0, "bytes": 0}

        async def counting(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = int(message["status"])
            elif message["type"] == "http.response.body":
                sent["bytes"] += len(message.get("body", b""))
            await send(message)

        self.metrics.inflight.inc()
        self.lifecycle.inflight += 1
        try:
            await self._handle(scope, receive, counting)
        except asyncio.CancelledError:  # the drain's deadline passed with this one running
            self.lifecycle.cut_off += 1
            sent["status"] = sent["status"] or 499
            raise
        except Exception:
            sent["status"] = sent["status"] or 500
            raise
        finally:
            sent["status"] = sent["status"] or 499  # the client went away first
            self.metrics.inflight.dec()
            self.lifecycle.inflight -= 1
            seconds = time.perf_counter() - started
            method, path = scope.get("method", ""), scope.get("path", "")
            self.metrics.observe("http", endpoint_of(path), str(sent["status"]),
                                 seconds)
            client = scope.get("client")
            where = f"{client[0]}:{client[1]}" if client else "-"
            query = scope.get("query_string", b"").decode("latin-1")
            access_log.info('%s "%s %s%s HTTP/%s" %s %d %.2fms', where, method, path,
                            f"?{query}" if query else "", scope.get("http_version", "1.1"),
                            sent["status"], sent["bytes"], seconds * 1e3)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await self._too_large(send, int(length))
            return
        body = b""
        if method in ("POST", "PUT", "PATCH"):
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body:
                    await self._too_large(send, size)
                    return
                chunks.append(chunk)
                more = bool(message.get("more_body"))
            body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        if path == "/v2/health/ready" and method == "GET":
            if self.lifecycle.draining:
                await reply(send, 503, {"error": "Server is not ready: draining"})
            elif not all(m.ready for m in self.models.values()):
                await reply(send, 503, {"error": "Server is not ready: loading"})
            else:
                await reply(send, 200, {"ready": True})
            return
        found = MODEL_PATH.fullmatch(path)
        if found:
            model = self.models.get(found["name"])
            version = found["version"]
            if model is not None and version is not None \
                    and version != model.servable.version:
                await reply(send, 404, {"error": f"Model {model.name} has no version "
                                        f"{version}; it has version {model.servable.version}"})
                return
            if model is not None and found["verb"] is None and method == "GET":
                await reply(send, 200, model.metadata())
                return
            if found["verb"] == "/infer" and method == "POST":
                await self._infer(found["name"], body, headers, send)
                return
            if version is not None:  # the model's own version: KServe's path without it
                scope = {**scope, "path": f"/v2/models/{found['name']}{found['verb'] or ''}",
                         "raw_path": None}
        await self.app(scope, replay, send)

    async def _infer(self, name: str, body: bytes, raw_headers: Mapping[bytes, bytes],
                     send: Send) -> None:
        """``POST /v2/models/NAME/infer`` through KServe's data plane (module docstring)."""
        from pydantic import ValidationError

        from hvdtrain.serving.kserve_api import (
            InferenceError,
            InferenceRequest,
            InvalidInput,
            ModelNotFound,
            ModelNotReady,
        )

        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw_headers.items()}
        plane = self.dataplane
        try:
            if not await plane.model_ready(name, True):
                raise ModelNotReady(name)
            parsed: Any = body if BINARY_HEADER in raw_headers else (
                InferenceRequest.model_validate_json(body))
            try:
                request, _ = plane.decode(parsed, headers, protocol_version="v2",
                                          model_name=name)
            except (InferenceError, ValueError, KeyError, TypeError, IndexError) as exc:
                # KServe's decoder on a body it cannot take (binary BYTES that are not UTF-8,
                # a header that does not fit the body, ...): the client's mistake
                raise InvalidInput(f"cannot decode the request ({exc})") from None
            answer, answer_headers = await plane.infer(model_name=name, request=request,
                                                       headers=headers)
            encoded, more = plane.encode(model_name=name, response=answer, headers=headers,
                                         req_attributes={})
        except ValidationError as exc:
            await reply(send, 400, {"error": malformed(exc.errors())})
            return
        except InvalidInput as exc:
            await reply(send, 400, {"error": str(exc)})
            return
        except ModelNotFound as exc:
            await reply(send, 404, {"error": str(exc)})
            return
        except ModelNotReady as exc:
            await reply(send, 503, {"error": str(exc)})
            return
        except Exception as exc:  # a failed runtime: logged with its traceback, then a 500
            log.exception("inference failed")
            await reply(send, 500, {"error": f"{type(exc).__name__}: {exc}"})
            return
        extra = {k.lower(): v for k, v in {**answer_headers, **more}.items()
                 if k.lower() not in ("content-length", "content-type")}
        if isinstance(encoded, bytes):
            await reply_raw(send, 200, encoded, "application/octet-stream", extra)
        else:
            # orjson (KServe's own dependency): a response's JSON in ~1 µs, json's ~15 µs
            await reply_raw(send, 200, orjson.dumps(encoded, option=orjson.OPT_SERIALIZE_NUMPY),
                            "application/json", extra)

    async def _too_large(self, send: Send, size: int) -> None:
        await reply(send, 413, {"error": f"request body of {size} bytes or more is over the "
                                f"limit of {self.max_body} bytes (--max-body-bytes)"},
                    close=True)


async def reply(send: Send, status: int, content: Any, close: bool = False) -> None:
    await reply_raw(send, status, json.dumps(content).encode(), "application/json",
                    {"connection": "close"} if close else {})


async def reply_raw(send: Send, status: int, body: bytes, content_type: str,
                    headers: Mapping[str, str]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
        *((k.encode("latin-1"), str(v).encode("latin-1")) for k, v in headers.items())]})
    await send({"type": "http.response.body", "body": body})


def malformed(problems: Any) -> str:
    """Pydantic's complaints about a request body, as one sentence."""
    said = []
    for problem in list(problems)[:3]:
        where = ".".join(str(p) for p in problem.get("loc", ()) if p != "body")
        said.append(f"{where}: {problem.get('msg')}" if where else str(problem.get("msg")))
    return "malformed inference request: " + "; ".join(said)


def install_error_handlers(app: Any) -> None:
    """KServe's REST app answers every error with the protocol's ``{"error": "..."}``; client
    mistakes are one access-log line, not a logged traceback (KServe logs one for each)."""
    from hvdtrain.serving.kserve_api import (
        HTTPException,
        InvalidInput,
        JSONResponse,
        ModelNotFound,
        RequestValidationError,
    )

    def error(status: int, text: str, headers: Mapping[str, str] | None = None) -> Any:
        return JSONResponse(status_code=status, content={"error": text}, headers=headers)

    async def bad_body(_: Any, exc: RequestValidationError) -> Any:
        return error(400, malformed(exc.errors()))

    async def http_error(_: Any, exc: HTTPException) -> Any:
        return error(exc.status_code, str(exc.detail), exc.headers)

    async def invalid(_: Any, exc: InvalidInput) -> Any:
        return error(400, str(exc))

    async def not_found(_: Any, exc: ModelNotFound) -> Any:
        return error(404, str(exc))

    app.add_exception_handler(RequestValidationError, bad_body)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(InvalidInput, invalid)
    app.add_exception_handler(ModelNotFound, not_found)
