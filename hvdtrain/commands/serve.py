"""``hvdtrain serve``: a checkpoint or an export on the Open Inference Protocol (KServe V2).

One process, no ranks: the options become a ``ServeRequest``, ``hvdtrain.serving.server``
serves it until SIGTERM, and its exit code is the command's. The serving package (KServe, the
model's framework) is imported only when the command runs.
"""

from __future__ import annotations

from typing import Any

import click

from hvdtrain.commands.options import verbosity_options


@click.command(context_settings={"show_default": True})
@click.option("--checkpoint", default=None, metavar="PATH",
              help="A checkpoint file or a run directory (its newest checkpoint); exported "
              "first (ONNX for torch, Keras for TensorFlow) into .hvdtrain-serve/ beside it.")
@click.option("--model-dir", default=None, metavar="PATH",
              help="What hvdtrain export wrote (model.onnx, model.keras, a SavedModel "
              "directory) with its .json sidecar, or the directory holding them.")
@click.option("--name", default=None,
              help="The model's name in every URL.  [default: MODEL-DATA, e.g. "
              "mlp-breast-cancer]")
@click.option("--host", default="0.0.0.0", help="The address to listen on.")
@click.option("--port", type=int, default=8080, help="HTTP port (0: any free one).")
@click.option("--grpc-port", type=int, default=None,
              help="Also serve the protocol's gRPC API on this port.  [default: no gRPC]")
@click.option("--max-batch-size", type=int, default=64,
              help="Most rows in one runtime call, and in one request.")
@click.option("--max-batch-delay-ms", type=float, default=0.0,
              help="How long a request may wait for others to fill a batch (0: only those "
              "that queued while the runtime was busy).")
@click.option("--batching/--no-batching", default=True,
              help="Coalesce concurrent requests into one runtime call.")
@click.option("--workers", type=int, default=1,
              help="Runtime calls at once (threads); run more processes as more replicas.")
@click.option("--drain-timeout", type=float, default=30.0,
              help="Seconds to answer the accepted requests after SIGTERM.")
@click.option("--max-body-bytes", type=int, default=16 * 1024 * 1024,
              help="Largest request body (and gRPC message).")
@verbosity_options
def serve(**kw: Any) -> None:
    """Serve a model on the Open Inference Protocol (KServe V2): REST, optional gRPC,
    /metrics.

    \b
    hvdtrain serve --checkpoint runs/exp1 --port 8080
    curl localhost:8080/v2/models/mlp-breast-cancer
    """
    from hvdtrain.serving.server import ServeRequest
    from hvdtrain.serving.server import serve as run_server

    code = run_server(ServeRequest(**kw))
    if code:
        raise SystemExit(code)
