"""The Open Inference Protocol's view of a ``Servable``: a request's tensors checked against the
model's specs and decoded, the response's tensors built, and the model's metadata.

Every problem with a request is KServe's ``InvalidInput`` (HTTP 400, gRPC INVALID_ARGUMENT) with
one sentence naming the input and what the model takes: an unknown or missing input, another
datatype, another shape, values that do not fill the shape, an empty batch, more rows than
``--max-batch-size`` (a request is never split across runtime calls, so a larger one is
refused, as Triton does). Importing this module imports KServe.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hvdtrain.serving.kserve_api import InferOutput, InferRequest, InferResponse, InvalidInput
from hvdtrain.serving.servable import Servable, TensorSpec


def shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def spec_text(spec: TensorSpec) -> str:
    return f"{spec.name!r} ({spec.datatype} {shape_text(spec.shape)})"


def read_inputs(request: InferRequest, specs: Sequence[TensorSpec],
                max_rows: int) -> dict[str, np.ndarray]:
    """The request's tensors by name, checked against ``specs`` (all of the same batch)."""
    wanted = {s.name: s for s in specs}
    takes = ", ".join(spec_text(s) for s in specs)
    given = list(request.inputs or [])
    if not given:
        raise InvalidInput(f"the request has no inputs; the model takes {takes}")
    found: dict[str, np.ndarray] = {}
    rows: int | None = None
    for tensor in given:
        spec = wanted.get(tensor.name)
        if spec is None:
            raise InvalidInput(f"unknown input {tensor.name!r}; the model takes {takes}")
        if tensor.name in found:
            raise InvalidInput(f"input {tensor.name!r} is given twice")
        found[tensor.name] = read_tensor(tensor, spec, max_rows)
        count = len(found[tensor.name])
        if rows is not None and count != rows:
            raise InvalidInput(f"input {tensor.name!r} has {count} rows, the others {rows}")
        rows = count
    missing = [n for n in wanted if n not in found]
    if missing:
        raise InvalidInput(f"missing input {missing[0]!r}; the model takes {takes}")
    return found


def read_tensor(tensor: Any, spec: TensorSpec, max_rows: int) -> np.ndarray:
    name = tensor.name
    if tensor.datatype != spec.datatype:
        raise InvalidInput(f"input {name!r} is {tensor.datatype}; the model takes "
                           f"{spec_text(spec)}")
    shape = list(tensor.shape)
    fits = len(shape) == len(spec.shape) and all(
        isinstance(d, int) and d >= 0 and (want == -1 or d == want)
        for d, want in zip(shape, spec.shape, strict=True))
    if not fits:
        raise InvalidInput(f"input {name!r} has shape {shape_text(shape)}; the model takes "
                           f"{spec_text(spec)}")
    if shape[0] == 0:
        raise InvalidInput(f"input {name!r} is an empty batch (shape {shape_text(shape)}); "
                           "send at least one row")
    if shape[0] > max_rows:
        raise InvalidInput(f"input {name!r} has {shape[0]} rows; at most {max_rows} in one "
                           "request (--max-batch-size)")
    try:
        values = tensor.as_numpy()
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"input {name!r}: its data does not fill shape "
                           f"{shape_text(shape)} of {spec.datatype} values "
                           f"({math.prod(shape)} wanted; {exc})") from None
    return np.asarray(values)


def response(request: InferRequest, model_name: str, version: str,
             outputs: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]) -> InferResponse:
    tensors = []
    for spec in specs:
        data = outputs[spec.name]
        if request.from_grpc:  # raw bytes now: KServe's to_grpc tests an array's truth value
            tensor = InferOutput(spec.name, list(data.shape), spec.datatype)
            tensor.set_data_from_numpy(data, binary_data=True)
        else:  # as it is: KServe encodes it as the request asked (JSON or binary)
            tensor = InferOutput(spec.name, list(data.shape), spec.datatype, data)
        tensors.append(tensor)
    return InferResponse(request.id or "", model_name, tensors, model_version=version,
                         use_binary_outputs=request.use_binary_outputs,
                         requested_outputs=request.request_outputs)


def metadata(name: str, servable: Servable) -> dict[str, Any]:
    """``GET /v2/models/NAME``: the protocol's fields, plus the model's parameters."""
    return {"name": name, "versions": [servable.version], "platform": servable.runtime,
            "inputs": [s.as_v2() for s in servable.inputs],
            "outputs": [s.as_v2() for s in servable.outputs],
            "parameters": servable.parameters()}
