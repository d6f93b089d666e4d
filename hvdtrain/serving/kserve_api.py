"""The parts of KServe the server uses, imported once, here.

Importing ``kserve`` runs ``kserve.model_server``, which parses ``sys.argv`` with KServe's own
options (``--workers``, ``--http_port``, ...): ``hvdtrain serve``'s options, or a test runner's,
would be read as KServe's (argparse even takes prefixes). So ``sys.argv`` is hidden for that one
import, and every serving module takes KServe's names from this module, never from ``kserve``
directly, whichever of them is imported first.
"""

from __future__ import annotations

import sys

_argv = sys.argv
sys.argv = _argv[:1]
try:
    import kserve  # noqa: F401  # the import that parses sys.argv
finally:
    sys.argv = _argv

from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from kserve import Model, ModelServer  # noqa: E402
from kserve.errors import (  # noqa: E402
    InferenceError,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
)
from kserve.metrics import PREDICT_HIST_TIME, get_labels  # noqa: E402
from kserve.model import InferenceVerb  # noqa: E402
from kserve.model_server import app  # noqa: E402
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc  # noqa: E402
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor  # noqa: E402
from kserve.protocol.grpc.servicer import InferenceServicer  # noqa: E402
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse  # noqa: E402
from kserve.protocol.rest.server import RESTServer  # noqa: E402
from kserve.protocol.rest.v2_datamodels import InferenceRequest  # noqa: E402
from starlette.exceptions import HTTPException  # noqa: E402

__all__ = ["PREDICT_HIST_TIME", "ExceptionToStatusInterceptor", "HTTPException", "InferOutput",
           "InferRequest", "InferResponse", "InferenceError", "InferenceRequest",
           "InferenceServicer", "InferenceVerb", "InvalidInput", "JSONResponse", "Model",
           "ModelNotFound", "ModelNotReady", "ModelServer", "RESTServer",
           "RequestValidationError", "app", "get_labels", "grpc_predict_v2_pb2_grpc"]
