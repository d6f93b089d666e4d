"""Training throughput: hvdtrain's adapters against a minimal Horovod loop (and DDP for torch).

Runs inside every rank (``python -m hvdtrain.benchmarks.train OUT.json CONFIG_JSON``, started
by ``hvdtrain bench train`` through the ordinary launcher). The contenders train the same MLP
on the same synthetic batches with one thread per rank.

With ``framework = "torch"``:

* ``hvdtrain``: the torch ``FrameworkAdapter`` exactly as ``hvdtrain train`` drives it;
* ``horovod``: the classic synthetic-benchmark shape (``hvd.DistributedOptimizer``, Adam,
  ``loss.backward(); opt.step()``): what hvdtrain's own overhead is measured against;
* ``ddp``: ``DistributedDataParallel`` over ``torch.distributed`` with Gloo, PyTorch's own.

With ``framework = "tensorflow"``:

* ``hvdtrain``: the TensorFlow adapter as ``hvdtrain train`` drives it;
* ``horovod``: a minimal ``tf.function`` step (``GradientTape``, one
  ``hvd.grouped_allreduce`` of the gradients, ``apply_gradients``), what Horovod's
  TF2 synthetic benchmark does less its ``DistributedGradientTape`` wrapper, which calls
  ``.ref()`` that Keras 3 variables lack.

They run interleaved in rounds, each round's order rotated by one (hvdtrain, horovod, ddp;
horovod, ddp, hvdtrain; ...); each timed window is barrier-synchronised and throughput is
the aggregate over all ranks (samples of all ranks / the window), never one rank's speed
times the rank count. Every window's time is kept (``windows_s``, in round order), for
ratios paired within a round (``hvdtrain.benchmarks.stats``).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hvdtrain import comm
from hvdtrain.atomic import atomic_write_text
from hvdtrain.benchmarks.stats import rotated

# per framework, in the order they run in the first round (later rounds rotate it)
CONTENDERS: dict[str, tuple[str, ...]] = {"torch": ("hvdtrain", "horovod", "ddp"),
                                          "tensorflow": ("hvdtrain", "horovod")}
FP16 = "hvdtrain-fp16"  # optional (--with-fp16): the adapter with --compression fp16
# optional (--with-compression): the adapter with that --compression, and for torch DDP with
# its own hook for the same (bf16_compress_hook; powerSGD_hook at the same rank, compressing
# the same matrices: min_compression_rate 1)
COMPRESSED = {FP16: "fp16", "hvdtrain-bf16": "bf16", "hvdtrain-powersgd": "powersgd"}
# optional (--with-dense-embeddings): the adapter with --sparse-embeddings off, beside the
# default (auto), so the rows-instead-of-matrix gain is measured in the same run
DENSE = "hvdtrain-dense"
DDP_HOOKS = ("ddp-bf16", "ddp-powersgd")


@dataclass(frozen=True)
class TrainBenchConfig:
    features: int = 128
    hidden: int = 1024
    batch_size: int = 256  # per rank
    steps: int = 20  # timed steps per window
    warmup: int = 5
    rounds: int = 3
    framework: str = "torch"
    contenders: tuple[str, ...] = CONTENDERS["torch"]
    ddp_address: str = "127.0.0.1"  # rank 0's host, for torch.distributed's store
    ddp_port: int = 29511
    # "mlp", or "encoder": a BERT-small-sized transformers encoder (random weights: speed
    # only) on packed token batches of ``sequence`` tokens, as ``--model hf:`` trains
    model: str = "mlp"
    sequence: int = 128
    layers: int = 4
    powersgd_rank: int = 4  # the hvdtrain-powersgd and ddp-powersgd contenders'


_HIDDEN = {"width": TrainBenchConfig.hidden}  # read by the model factories, set by measure()


def bench_model(num_features: int, num_outputs: int) -> Any:
    """The benchmark's MLP (features → hidden → hidden → out), also as hvdtrain's
    ``--model hvdtrain.benchmarks.train:bench_model`` so all contenders train the same net."""
    import torch.nn as nn

    width = _HIDDEN["width"]
    return nn.Sequential(nn.Linear(num_features, width), nn.ReLU(),
                         nn.Linear(width, width), nn.ReLU(), nn.Linear(width, num_outputs))


_GRADIENT: dict[str, int] = {}  # fp32 gradient bytes a step allreduces (torch contenders)
_ENCODER = {"hidden": 256, "layers": 4}  # read by bench_encoder, set by measure()
VOCABULARY = 30522  # BERT's


def bench_encoder(num_outputs: int = 1) -> Any:
    """A BERT-small-sized classifier (4 layers, hidden 256, 4 heads, BERT's vocabulary) with
    random weights, taking packed token batches through hvdtrain's own ``hf:`` wrapper: the
    model, the wrapper and the allreduced bytes of a fine-tuning run, without a checkpoint."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from hvdtrain.frameworks.torch.pretrained import _torch_module

    hidden, layers = _ENCODER["hidden"], _ENCODER["layers"]
    config = BertConfig(vocab_size=VOCABULARY, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=max(hidden // 64, 1), intermediate_size=4 * hidden,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    return _torch_module()(BertForSequenceClassification(config), num_outputs, True)


def bench_keras_model(num_features: int, num_outputs: int) -> Any:
    """The same MLP in Keras 3, for the TensorFlow contenders."""
    import keras
    from keras import layers

    width = _HIDDEN["width"]
    return keras.Sequential([keras.Input((num_features,)),
                             layers.Dense(width, activation="relu"),
                             layers.Dense(width, activation="relu"),
                             layers.Dense(num_outputs)])


def contender_adam(torch: Any, parameters: Any) -> Any:
    """The optimizer of every torch contender: Adam in the ``foreach`` implementation that
    hvdtrain's adapter uses (``build_optimizer``), so the contenders differ in how gradients
    travel, not in how the optimizer loops (torch's CPU default is a loop per parameter)."""
    return torch.optim.Adam(parameters, 1e-3, foreach=True)


def _loss(torch: Any, logits: Any, y: Any) -> Any:
    """Binary task, one logit: the loss hvdtrain's adapter uses for two classes."""
    return torch.nn.functional.binary_cross_entropy_with_logits(logits.squeeze(1), y.float())


def _batch(config: TrainBenchConfig, rank: int) -> tuple[Any, Any]:
    """One synthetic batch per rank (x float32, y int64 in {0, 1}), reused every step: the
    benchmark measures the step, not a data pipeline."""
    import numpy as np

    rng = np.random.default_rng(rank)
    y = rng.integers(0, 2, config.batch_size).astype(np.int64)
    if config.model == "encoder":  # full-length rows: ids, attention mask, token types
        ids = rng.integers(1, VOCABULARY, (config.batch_size, config.sequence))
        x = np.stack([ids, np.ones_like(ids), np.zeros_like(ids)], 1).astype(np.int32)
        return x, y
    x = rng.standard_normal((config.batch_size, config.features)).astype(np.float32)
    return x, y


def measure(config: TrainBenchConfig) -> dict[str, Any]:
    _HIDDEN["width"] = config.hidden
    _ENCODER.update(hidden=config.hidden, layers=config.layers)
    comm.horovod_defaults()  # the cycle time hvdtrain's ranks run with, for every contender
    if config.framework == "tensorflow":
        steps, barrier, rank_info = _tensorflow_steps(config)
    else:
        steps, barrier, rank_info = _torch_steps(config)
    size, controller = rank_info
    for step in steps.values():
        for _ in range(config.warmup):
            step()
    windows: dict[str, list[float]] = {name: [] for name in steps}
    for round_index in range(config.rounds):
        # interleaved, so a noisy moment hits every contender; rotated, so none is always
        # first after the barrier (every rank computes the same order)
        for name in rotated(list(steps), round_index):
            step = steps[name]
            barrier()
            start = time.perf_counter()
            for _ in range(config.steps):
                step()
            barrier()
            windows[name].append(time.perf_counter() - start)
    samples = config.steps * config.batch_size * size
    result = {name: {"samples_per_second": samples / statistics.median(times),
                     "windows_s": times} for name, times in windows.items()}
    return {"ranks": size, "controller": controller, "framework": config.framework,
            "config": asdict(config), "contenders": result,
            "gradient_bytes_per_step": _GRADIENT.get("bytes")}


Steps = dict[str, Callable[[], None]]


def _torch_steps(config: TrainBenchConfig) -> tuple[Steps, Callable[[], Any], tuple[int, str]]:
    import horovod.torch as hvd
    import torch

    torch.set_num_threads(1)
    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    x, y = _batch(config, rank)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    steps: Steps = {}
    # pin() splits the cores; the benchmark fixes one thread per rank
    factory = "bench_encoder" if config.model == "encoder" else "bench_model"

    def new_model() -> Any:
        torch.manual_seed(0)
        return bench_encoder(1) if config.model == "encoder" else bench_model(config.features, 1)

    _GRADIENT["bytes"] = 4 * sum(p.numel() for p in new_model().parameters())
    steps.update(_hvdtrain_steps("torch", f"{__name__}:{factory}", x, y, config,
                                 after_pin=lambda: torch.set_num_threads(1)))
    if "horovod" in config.contenders:
        steps["horovod"] = horovod_torch_step(hvd, torch, new_model(), xt, yt)
    if "ddp" in config.contenders:
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"tcp://{config.ddp_address}:"
                                f"{config.ddp_port}", rank=rank, world_size=size)
        ddp = torch.nn.parallel.DistributedDataParallel(new_model())
        ddp_opt = contender_adam(torch, ddp.parameters())

        def ddp_step() -> None:
            ddp_opt.zero_grad()
            _loss(torch, ddp(xt), yt).backward()
            ddp_opt.step()

        steps["ddp"] = ddp_step
    for name in DDP_HOOKS:
        if name in config.contenders:
            steps[name] = _ddp_hook_step(torch, name, new_model(), config, rank, size, xt, yt)
    return steps, hvd.barrier, (size, "mpi" if hvd.mpi_enabled() else "gloo")


def _ddp_hook_step(torch: Any, name: str, model: Any, config: TrainBenchConfig, rank: int,
                   size: int, xt: Any, yt: Any) -> Callable[[], None]:
    """DDP with its own bf16 or PowerSGD communication hook."""
    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook

    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method=f"tcp://{config.ddp_address}:"
                                f"{config.ddp_port}", rank=rank, world_size=size)
    if name == "ddp-powersgd":
        # one bucket: DDP's PowerSGD hook issues its second allreduce (Q) from the first one's
        # completion callback, so with several buckets in flight two ranks can issue Gloo
        # collectives in different orders (seen on the encoder between hosts: Gloo aborts with
        # "Received data size doesn't match expected size")
        megabytes = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
        ddp = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=megabytes + 1)
    else:
        ddp = torch.nn.parallel.DistributedDataParallel(model)
    if name == "ddp-bf16":
        # DDP refuses its bf16 hook by name unless CUDA 11+ and NCCL 2.10+ are there; Gloo
        # sums bfloat16 on a CPU, so the same hook runs, called through another name
        def bf16_hook(state: Any, bucket: Any) -> Any:
            return default_hooks.bf16_compress_hook(state, bucket)

        bf16_hook.__annotations__ = {}  # DDP checks annotations against its own types
        ddp.register_comm_hook(None, bf16_hook)
    else:  # its warm-up (2 steps, its minimum) is over before the timed windows
        state = powerSGD_hook.PowerSGDState(
            process_group=None, matrix_approximation_rank=config.powersgd_rank,
            start_powerSGD_iter=2, min_compression_rate=1)
        ddp.register_comm_hook(state, powerSGD_hook.powerSGD_hook)
    opt = contender_adam(torch, ddp.parameters())

    def step() -> None:
        opt.zero_grad()
        _loss(torch, ddp(xt), yt).backward()
        opt.step()

    return step


def horovod_torch_step(hvd: Any, torch: Any, model: Any, xt: Any, yt: Any
                       ) -> Callable[[], None]:
    """The classic Horovod step on ``model`` (the ``horovod`` contender): Adam in
    ``hvd.DistributedOptimizer``, ``loss.backward(); opt.step()``."""
    opt = hvd.DistributedOptimizer(contender_adam(torch, model.parameters()),
                                   named_parameters=model.named_parameters())
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)

    def horovod_step() -> None:
        opt.zero_grad()
        _loss(torch, model(xt), yt).backward()
        opt.step()

    return horovod_step


def _tensorflow_steps(config: TrainBenchConfig) -> tuple[Steps, Callable[[], Any],
                                                        tuple[int, str]]:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import horovod.tensorflow as hvd
    import keras
    import tensorflow as tf

    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    x, y = _batch(config, rank)
    steps: Steps = {}

    def one_thread() -> None:
        # before TensorFlow's runtime starts (it cannot change afterwards): pin() splits the
        # cores, the benchmark fixes one per rank; pin()'s op determinism stays on, for both
        # contenders alike (they share the process)
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)

    steps.update(_hvdtrain_steps("tensorflow", f"{__name__}:bench_keras_model", x, y, config,
                                 after_pin=one_thread))  # also when there is no adapter
    if "horovod" in config.contenders:
        keras.utils.set_random_seed(0)
        model = bench_keras_model(config.features, 1)
        opt = keras.optimizers.Adam(1e-3)
        opt.build(model.trainable_variables)
        hvd.broadcast_variables([v.value for v in model.variables], root_rank=0)
        xt, yt = tf.constant(x), tf.constant(y)

        @tf.function
        def train_step(features: Any, labels: Any) -> Any:
            with tf.GradientTape() as tape:
                logits = tf.squeeze(model(features, training=True), 1)
                loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
                    labels=tf.cast(labels, tf.float32), logits=logits))
            variables = model.trainable_variables
            grads = tape.gradient(loss, variables)
            grads = hvd.grouped_allreduce(grads, op=hvd.Average)
            opt.apply_gradients(zip(grads, variables, strict=True))
            return loss

        def horovod_step() -> None:
            train_step(xt, yt)

        steps["horovod"] = horovod_step
    token = tf.constant(0.0)

    def barrier() -> None:
        hvd.allreduce(token, name="bench_barrier").numpy()  # every rank must arrive

    return steps, barrier, (size, "mpi" if hvd.mpi_enabled() else "gloo")


def _hvdtrain_steps(framework: str, model: str, x: Any, y: Any, config: TrainBenchConfig,
                    after_pin: Callable[[], None] = lambda: None,
                    adapters_out: dict[str, Any] | None = None) -> Steps:
    """hvdtrain's adapter (and with ``--with-fp16`` a second one with fp16 compression) on a
    Dataset holding exactly the benchmark's batch. Every adapter is pinned before any is set
    up, and ``after_pin`` runs between, to override the adapters' thread count: TensorFlow
    accepts thread settings only before its runtime starts. ``adapters_out`` receives the
    adapters by name (``bench overlap`` hooks their models)."""
    from hvdtrain.config import TrainConfig
    from hvdtrain.frameworks.registry import create_adapter
    from hvdtrain.types import Dataset, DeviceChoice

    variants = [("hvdtrain", "none", "auto"), (DENSE, "none", "off"),
                *((name, compression, "auto") for name, compression in COMPRESSED.items())]
    wanted = [variant for variant in variants if variant[0] in config.contenders]
    adapters = {name: create_adapter(framework) for name, _, _ in wanted}
    if adapters_out is not None:
        adapters_out.update(adapters)
    for adapter in adapters.values():
        adapter.pin(DeviceChoice("cpu", None, "benchmark"))
    after_pin()
    data = Dataset("bench", "tabular", x, y, x[:2], y[:2], num_classes=2)
    for name, compression, sparse in wanted:
        adapters[name].setup(TrainConfig(framework=framework, model=model, data="synthetic",
                                         lr=1e-3, lr_scaling="none", seed=0,
                                         compression=compression, sparse_embeddings=sparse,
                                         powersgd_rank=config.powersgd_rank,
                                         batch_size=config.batch_size), data)

    def step_of(adapter: Any) -> Callable[[], None]:
        def step() -> None:
            adapter.train_batch(x, y, 1e-3)  # NumPy batches, as the loop gives them

        return step

    return {name: step_of(adapter) for name, adapter in adapters.items()}


def main(argv: list[str]) -> None:
    out, raw = Path(argv[0]), json.loads(argv[1])
    raw["contenders"] = tuple(raw["contenders"])
    config = TrainBenchConfig(**raw)
    result = measure(config)
    if config.framework == "tensorflow":
        import horovod.tensorflow as hvd
    else:
        import horovod.torch as hvd

    if hvd.rank() == 0:
        atomic_write_text(out, json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
