"""A ``Servable`` as a KServe ``Model``: what KServe's data plane (REST and gRPC) calls.

``predict`` checks the request (``protocol``), prepares its rows on the event loop (cheap:
the request's own rows, bounded by ``--max-batch-size``), hands them to the batcher, which
runs the model off the loop, and builds the response from this request's share. ``load``
makes the model ready only after one warm-up inference through that same path, run before
any port is bound. A version in a gRPC request must be the model's (REST versions are
checked in ``http``, before KServe sees the path).

KServe's data plane calls a model through ``Model.__call__``, which wraps ``preprocess``,
``predict`` and ``postprocess`` in a Prometheus timer each, asking ``inspect`` every time
whether each is a coroutine: about 55 µs a request, measured in process, a fifth of a small
model's whole per-request cost with batching on (docs/BENCHMARKS.md). This model has no pre-
or post-processing step (``predict`` does it all), so ``__call__`` calls ``predict`` and
records KServe's own ``request_predict_seconds`` for it, with the label set looked up once.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from hvdtrain.errors import DataError
from hvdtrain.serving import protocol
from hvdtrain.serving.kserve_api import (
    PREDICT_HIST_TIME,
    InferenceVerb,
    InferRequest,
    InferResponse,
    InvalidInput,
    Model,
    ModelNotFound,
    get_labels,
)
from hvdtrain.serving.servable import Servable

Submit = Callable[[np.ndarray], Awaitable[np.ndarray]]


class ServedModel(Model):
    def __init__(self, name: str, servable: Servable, max_rows: int) -> None:
        super().__init__(name)
        self.servable, self.max_rows = servable, max_rows
        self.submit: Submit | None = None  # the batcher, once the event loop runs
        self._predict_seconds = PREDICT_HIST_TIME.labels(**get_labels(name))

    async def __call__(self, body: Any, headers: dict[str, str] | None = None,
                       verb: InferenceVerb = InferenceVerb.PREDICT) -> Any:
        """KServe's ``Model.__call__`` for a model with no pre- or post-processing (module
        docstring): ``(response, response headers)``."""
        if verb != InferenceVerb.PREDICT:
            return await super().__call__(body, headers, verb)
        started = time.perf_counter()
        response = await self.predict(body, headers)
        self._predict_seconds.observe(time.perf_counter() - started)
        return response, {}

    def load(self) -> bool:
        """The warm-up: one request through preparation, the runtime and the response."""
        rows = self.servable.prepare(self.servable.probe())
        self.servable.finish(self.servable.run(rows))
        self.ready = True
        return True

    def get_input_types(self) -> list[dict[str, Any]]:
        return [s.as_v2() for s in self.servable.inputs]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [s.as_v2() for s in self.servable.outputs]

    def metadata(self) -> dict[str, Any]:
        return protocol.metadata(self.name, self.servable)

    async def predict(self, payload: Any, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> InferResponse:
        if not isinstance(payload, InferRequest):
            raise InvalidInput(f"this server speaks the Open Inference Protocol (V2): POST "
                               f"/v2/models/{self.name}/infer")
        version = self.servable.version
        if payload.model_version and payload.model_version != version:
            raise ModelNotFound(f"{self.name} version {payload.model_version} (it has "
                                f"version {version})")
        tensors = protocol.read_inputs(payload, self.servable.inputs, self.max_rows)
        try:
            rows = self.servable.prepare(tensors)
        except DataError as exc:
            raise InvalidInput(exc.message) from None
        if self.submit is None:
            raise RuntimeError("the batcher is not running")
        out = await self.submit(rows)
        return protocol.response(payload, self.name, version, self.servable.finish(out),
                                 self.servable.outputs)
