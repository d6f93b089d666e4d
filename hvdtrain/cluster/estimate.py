"""What a data-parallel step will cost on a cluster you have not booked yet: the ring model.

Before anyone books 64 GPUs, ``hvdtrain plan --estimate`` predicts step time, the share of it
spent communicating, scaling efficiency and what fp16 compression buys, from four inputs: the
model's parameter count, its compute time per step on one device, the plan (hosts × ranks per
host) and the links (bandwidth, latency). Pure arithmetic, standard library only, so it runs
on a laptop and is unit-tested against closed forms.

The cost of one allreduce of a buffer of ``s`` bytes over a ring of ``n`` ranks whose slowest
link moves ``B`` bytes/s with per-message latency ``α`` (the bandwidth-optimal ring: a
reduce-scatter then an all-gather, 2(n−1) steps of s/n bytes each)::

    t_ring(s, n) = 2(n−1)/n · s/B + 2(n−1)·α

Horovod packs gradients into fusion buffers (``HOROVOD_FUSION_THRESHOLD``, 64 MiB by default)
and allreduces each, so a model of ``S`` bytes costs ceil(S/F) latency terms and S/B of
bandwidth terms. When hosts hold several ranks, the allreduce is hierarchical: a reduce inside
each host (the reduce-scatter half of a ring over the host's ``m`` ranks), a ring across the
``h`` hosts on the inter-host link, and a broadcast inside each host (the all-gather half)::

    t_hier(s) = (m−1)/m · s/B_intra + (m−1)·α_intra        intra-host reduce
              + 2(h−1)/h · s/B_inter + 2(h−1)·α_inter      inter-host ring
              + (m−1)/m · s/B_intra + (m−1)·α_intra        intra-host broadcast

A flat ring over all ranks moves the same bytes over each host's NIC but pays 2(n−1) latencies
instead of 2(h−1) + 2(m−1), which is what makes the hierarchy worth it at hundreds of ranks.

Step time brackets the truth from both sides: ``compute + comm`` if no allreduce overlaps the
backward pass (the upper bound), ``compute + max(0, comm − backward)`` if all of it hides
behind the backward pass (Horovod starts allreducing gradients as soon as they are ready;
backward is taken as ``backward_fraction`` of compute, 2/3 by default). Scaling efficiency is
``compute / step`` (1 rank does no allreduce), communication share ``exposed comm / step``.
Not modelled: Horovod's cycle time (≤ 1 ms per buffer by default), the fp16 casts, stragglers
and congestion; the validation in docs/BENCHMARKS.md shows what that leaves out here.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hvdtrain.errors import ConfigError

FUSION_BYTES = 64 * 1024 * 1024  # Horovod's default HOROVOD_FUSION_THRESHOLD
# fp32 gradients; fp16 and bf16 halve S (bf16: reduce-scatter and all-gather in bf16, the
# ring's bytes). PowerSGD sends low-rank factors instead: ``powersgd_elements``.
BYTES_PER_PARAMETER = {"none": 4, "fp16": 2, "bf16": 2}
DEFAULT_POWERSGD_RANK = 4
BACKWARD_FRACTION = 2 / 3  # backward ≈ 2 × forward: the window an allreduce can hide in


@dataclass(frozen=True)
class Link:
    """A link as the ring sees it: sustained bandwidth and per-message latency."""

    gbit_s: float  # gigabits per second (10**9 bits)
    latency_us: float

    @property
    def bytes_per_s(self) -> float:
        return self.gbit_s * 1e9 / 8

    @property
    def latency_s(self) -> float:
        return self.latency_us * 1e-6


# Defaults for a GPU cluster of the Horovod paper's era: PCIe 3 x16 inside a host (~10 GB/s),
# 25 Gbit/s Ethernet between hosts (the published 512-GPU runs), TCP/MPI latencies.
DEFAULT_INTRA = Link(gbit_s=80.0, latency_us=5.0)
DEFAULT_INTER = Link(gbit_s=25.0, latency_us=30.0)


@dataclass(frozen=True)
class Layout:
    hosts: int
    ranks_per_host: int

    @property
    def ranks(self) -> int:
        return self.hosts * self.ranks_per_host


@dataclass(frozen=True)
class Estimate:
    ranks: int
    hosts: int
    ranks_per_host: int
    algorithm: str  # none | ring (one host or one rank per host) | hierarchical
    compression: str
    gradient_bytes: int
    buffers: int
    compute_s: float
    comm_s: float  # allreduce time of all buffers, none hidden
    step_s: float  # no overlap: compute + comm
    step_overlapped_s: float  # comm hidden behind backward as far as it fits
    comm_share: float  # comm / step (no overlap)
    efficiency: float  # compute / step (no overlap)
    efficiency_overlapped: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def ring_allreduce_s(nbytes: float, ranks: int, link: Link) -> float:
    """2(n−1)/n · s/B + 2(n−1)·α: one ring allreduce of ``nbytes`` over ``ranks``."""
    if ranks <= 1:
        return 0.0
    return (2 * (ranks - 1) / ranks * nbytes / link.bytes_per_s
            + 2 * (ranks - 1) * link.latency_s)


def hierarchical_allreduce_s(nbytes: float, layout: Layout, intra: Link, inter: Link) -> float:
    """Reduce inside each host, ring across hosts, broadcast inside each host."""
    m, h = layout.ranks_per_host, layout.hosts
    half_intra = ((m - 1) / m * nbytes / intra.bytes_per_s + (m - 1) * intra.latency_s
                  if m > 1 else 0.0)
    return 2 * half_intra + ring_allreduce_s(nbytes, h, inter)


def algorithm_for(layout: Layout) -> str:
    if layout.ranks <= 1:
        return "none"
    return "hierarchical" if layout.hosts > 1 and layout.ranks_per_host > 1 else "ring"


def fused_buffers(total_bytes: int, fusion_bytes: int) -> list[int]:
    """The buffers Horovod's tensor fusion sends: full ones of ``fusion_bytes`` and the rest
    (``fusion_bytes`` 0 = fusion off: modelled as one buffer, the best case)."""
    if total_bytes <= 0:
        return []
    if fusion_bytes <= 0 or total_bytes <= fusion_bytes:
        return [total_bytes]
    full, rest = divmod(total_bytes, fusion_bytes)
    return [fusion_bytes] * full + ([rest] if rest else [])


def allreduce_s(nbytes: float, layout: Layout, intra: Link, inter: Link) -> float:
    """One buffer's allreduce time for this layout: the ring on the one link that there is,
    or the hierarchy when hosts hold several ranks."""
    kind = algorithm_for(layout)
    if kind == "none":
        return 0.0
    if kind == "hierarchical":
        return hierarchical_allreduce_s(nbytes, layout, intra, inter)
    link = intra if layout.hosts == 1 else inter
    return ring_allreduce_s(nbytes, layout.ranks, link)


def estimate(parameters: int, compute_s: float, layout: Layout, *, intra: Link = DEFAULT_INTRA,
             inter: Link = DEFAULT_INTER, compression: str = "none",
             fusion_bytes: int = FUSION_BYTES,
             backward_fraction: float = BACKWARD_FRACTION,
             shapes: list[tuple[int, ...]] | None = None,
             powersgd_rank: int = DEFAULT_POWERSGD_RANK) -> Estimate:
    """The predicted step for ``parameters`` gradients and ``compute_s`` of compute per step.
    PowerSGD needs the gradients' ``shapes``: its two rounds (P with the uncompressed tensors,
    then Q) are fused and sent one after the other, so each pays its own latencies."""
    check_inputs(parameters, compute_s, layout, intra, inter, fusion_bytes, backward_fraction)
    if compression == "powersgd":
        if shapes is None:
            raise ConfigError("the PowerSGD estimate needs the gradients' shapes: give a known "
                              f"model to --params ({', '.join(MODEL_SHAPES)})")
        first, second = powersgd_elements(shapes, powersgd_rank)
        buffers = fused_buffers(4 * first, fusion_bytes) + fused_buffers(4 * second,
                                                                          fusion_bytes)
        total = 4 * (first + second)
    else:
        total = parameters * BYTES_PER_PARAMETER[compression]
        buffers = fused_buffers(total, fusion_bytes)
    comm = sum(allreduce_s(b, layout, intra, inter) for b in buffers)
    step = compute_s + comm
    overlapped = compute_s + max(0.0, comm - backward_fraction * compute_s)
    return Estimate(ranks=layout.ranks, hosts=layout.hosts, ranks_per_host=layout.ranks_per_host,
                    algorithm=algorithm_for(layout), compression=compression,
                    gradient_bytes=total, buffers=len(buffers), compute_s=compute_s,
                    comm_s=comm, step_s=step, step_overlapped_s=overlapped,
                    comm_share=comm / step if step else 0.0,
                    efficiency=compute_s / step if step else 1.0,
                    efficiency_overlapped=compute_s / overlapped if overlapped else 1.0)


def check_inputs(parameters: int, compute_s: float, layout: Layout, intra: Link, inter: Link,
                 fusion_bytes: int, backward_fraction: float) -> None:
    problems = [
        (parameters > 0, f"the parameter count must be > 0, got {parameters}"),
        (compute_s > 0, f"--compute-ms must be > 0, got {compute_s * 1e3:g}"),
        (layout.hosts >= 1 and layout.ranks_per_host >= 1,
         f"the plan must have ranks, got {layout.hosts} hosts × {layout.ranks_per_host}"),
        (intra.gbit_s > 0 and inter.gbit_s > 0, "link bandwidths must be > 0"),
        (intra.latency_us >= 0 and inter.latency_us >= 0, "link latencies must be >= 0"),
        (fusion_bytes >= 0, f"the fusion buffer must be >= 0 bytes, got {fusion_bytes}"),
        (0 <= backward_fraction <= 1, "the backward fraction must be within 0..1"),
    ]
    for ok, message in problems:
        if not ok:
            raise ConfigError(message)


def fp16_gain(parameters: int, compute_s: float, layout: Layout, **kw: Any) -> float:
    """Step-time ratio fp32 / fp16 (no overlap): > 1 means fp16 compression pays."""
    fp32 = estimate(parameters, compute_s, layout, compression="none", **kw)
    fp16 = estimate(parameters, compute_s, layout, compression="fp16", **kw)
    return fp32.step_s / fp16.step_s


# -- parameter counts without a framework --------------------------------------------------

def mlp_parameters(widths: tuple[int, ...]) -> int:
    """Dense layers with biases: widths (in, h1, ..., out)."""
    return sum(a * b + b for a, b in itertools.pairwise(widths))


def resnet_parameters(blocks: tuple[int, int, int, int], classes: int = 1000) -> int:
    """Trainable parameters of a bottleneck ResNet as torchvision builds it (bias-free convs,
    batch norm scale and shift, a 1000-way classifier): 25,557,032 for ResNet-50 (3, 4, 6, 3),
    44,549,160 for ResNet-101 (3, 4, 23, 3)."""
    total = 3 * 64 * 7 * 7 + 2 * 64  # stem: 7×7 conv and its batch norm
    channels = 64
    for planes, count in zip((64, 128, 256, 512), blocks, strict=True):
        for index in range(count):
            total += (channels * planes + 2 * planes  # 1×1 reduce
                      + planes * planes * 9 + 2 * planes  # 3×3
                      + planes * 4 * planes + 2 * 4 * planes)  # 1×1 expand
            if index == 0:  # projection shortcut
                total += channels * 4 * planes + 2 * 4 * planes
            channels = 4 * planes
    return total + channels * classes + classes


MODEL_SHAPES = {  # gradient shapes of the known models PowerSGD's estimate can use
    "mlp": lambda: mlp_shapes((128, 256, 256, 1)),
    "bench-mlp": lambda: mlp_shapes((128, 1024, 1024, 1)),
    "resnet50": lambda: resnet_shapes((3, 4, 6, 3)),
    "resnet101": lambda: resnet_shapes((3, 4, 23, 3)),
}


def resnet_shapes(blocks: tuple[int, int, int, int],
                  classes: int = 1000) -> list[tuple[int, ...]]:
    """The gradients of ``resnet_parameters``' ResNet (conv kernels out × in × k × k, batch
    norm scale and shift, the classifier)."""
    def norm(c: int) -> list[tuple[int, ...]]:
        return [(c,), (c,)]

    shapes: list[tuple[int, ...]] = [(64, 3, 7, 7), *norm(64)]
    channels = 64
    for planes, count in zip((64, 128, 256, 512), blocks, strict=True):
        for index in range(count):
            shapes += [(planes, channels, 1, 1), *norm(planes), (planes, planes, 3, 3),
                       *norm(planes), (4 * planes, planes, 1, 1), *norm(4 * planes)]
            if index == 0:
                shapes += [(4 * planes, channels, 1, 1), *norm(4 * planes)]
            channels = 4 * planes
    return [*shapes, (classes, channels), (classes,)]


def model_shapes(name: str) -> list[tuple[int, ...]] | None:
    """The gradient shapes of a known model, or None (a bare count has none)."""
    build = MODEL_SHAPES.get(name.strip().lower())
    return build() if build else None


def model_parameters(name: str) -> int:
    """Known models by name (``catalog.ESTIMATE_MODELS``), or a count: 44.5M, 1200000, 3e6."""
    counts = {
        "mlp": mlp_parameters((128, 256, 256, 1)),  # built-in mlp on the synthetic set
        "bench-mlp": mlp_parameters((128, 1024, 1024, 1)),  # bench train's default
        "resnet50": resnet_parameters((3, 4, 6, 3)),
        "resnet101": resnet_parameters((3, 4, 23, 3)),
    }
    if name in counts:
        return counts[name]
    text = name.strip().upper()
    factor = {"K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9}.get(text[-1:], 1)
    try:
        value = float(text[:-1] if factor != 1 else text) * factor
    except ValueError:
        raise ConfigError(f"--params {name!r}: not a count nor a known model",
                          hint=f"a number (e.g. 44.5M) or one of {', '.join(counts)}") from None
    if value < 1:
        raise ConfigError(f"--params must be >= 1, got {name!r}")
    return int(value)


# -- link figures from a file --------------------------------------------------------------

def fit_ring(points: list[tuple[float, float]], ranks: int) -> Link:
    """Bandwidth and latency of the ring that best explains measured (bytes, seconds) points
    of one allreduce each, by least squares on t = a·s + b (a = 2(n−1)/(n·B), b = 2(n−1)·α)."""
    if ranks < 2 or len({s for s, _ in points}) < 2:
        raise ConfigError("a link profile needs allreduce timings of at least 2 sizes on "
                          ">= 2 ranks", hint="hvdtrain bench allreduce --sizes 1M,16M,64M --json")
    n = len(points)
    mean_s = sum(s for s, _ in points) / n
    mean_t = sum(t for _, t in points) / n
    slope = (sum((s - mean_s) * (t - mean_t) for s, t in points)
             / sum((s - mean_s) ** 2 for s, _ in points))
    intercept = mean_t - slope * mean_s
    if slope <= 0:
        raise ConfigError("the link profile's timings do not grow with size: cannot fit a "
                          "bandwidth", hint="measure larger sizes (16M and up)")
    steps = 2 * (ranks - 1)
    return Link(gbit_s=steps / ranks / slope * 8 / 1e9,
                latency_us=max(0.0, intercept / steps * 1e6))


def read_link_profile(path: Path) -> dict[str, Link]:
    """``{"intra": {"gbit_s": .., "latency_us": ..}, "inter": {...}}`` (either may be
    missing), or the ``--json`` output of ``hvdtrain bench allreduce``: its uncompressed
    float32 timings fitted as the inter-host link when it ran across hosts (``--shaped-link``),
    else as the intra-host link."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--link-profile {path}: {exc}") from None
    if isinstance(data, dict) and "rows" in data:
        points = [(float(r["bytes"]), float(r["hvdtrain"]["seconds"])) for r in data["rows"]
                  if r.get("compression") == "none" and r.get("dtype") == "float32"]
        return {"inter" if "link" in data else "intra": fit_ring(points, int(data["ranks"]))}
    links = {}
    for key in ("intra", "inter"):
        if key in data:
            try:
                links[key] = Link(float(data[key]["gbit_s"]), float(data[key]["latency_us"]))
            except (KeyError, TypeError, ValueError):
                raise ConfigError(f"--link-profile {path}: {key} needs gbit_s and latency_us",
                                  hint='{"inter": {"gbit_s": 25, "latency_us": 30}}') from None
    if not links:
        raise ConfigError(f"--link-profile {path}: neither intra nor inter is given")
    return links


# -- the published reference ---------------------------------------------------------------

# Horovod's README and paper (Sergeev & Del Balso 2018): 90 % scaling efficiency for
# ResNet-101 on 512 GPUs (128 servers × 4 Pascal GPUs, 25 Gbit/s RoCE), TensorFlow,
# synthetic data. Compute per step is not published; assumed: batch 64 images per GPU at
# about 140 images/s on a P100 in fp32 (tf_cnn_benchmarks of that time) ≈ 0.45 s.
RESNET101_COMPUTE_S = 0.45
RESNET101_GPUS_PER_HOST = 4
PUBLISHED = {512: 0.90}


# -- what each compression sends ----------------------------------------------------------

def powersgd_layout(shape: tuple[int, ...], rank: int) -> tuple[int, int, int] | None:
    """(n, m, r) when PowerSGD compresses a gradient of ``shape``, else None (sent whole).

    The gradient is viewed as an n × m matrix (n = the first dimension, m = the product of
    the rest, as DDP's PowerSGD hook does) and sent as P (n × r) and Q (m × r), r = min(n, m,
    rank): worth it only when (n + m)·r < n·m. Vectors (1-D) are never compressed."""
    if len(shape) < 2:
        return None
    n = shape[0]
    m = 1
    for d in shape[1:]:
        m *= d
    r = min(n, m, rank)
    return (n, m, r) if r >= 1 and (n + m) * r < n * m else None


def powersgd_elements(shapes: list[tuple[int, ...]], rank: int) -> tuple[int, int]:
    """Elements PowerSGD allreduces per step, in its two rounds: (P's and the uncompressed
    tensors', Q's)."""
    first = second = 0
    for shape in shapes:
        layout = powersgd_layout(shape, rank)
        if layout is None:
            size = 1
            for d in shape:
                size *= d
            first += size
        else:
            n, m, r = layout
            first += n * r
            second += m * r
    return first, second


def mlp_shapes(widths: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The gradients of dense layers with biases: (out, in) weights and (out,) biases."""
    shapes: list[tuple[int, ...]] = []
    for a, b in itertools.pairwise(widths):
        shapes += [(b, a), (b,)]
    return shapes
