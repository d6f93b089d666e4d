"""Horovod's bfloat16 sum (added by ``scripts/build_horovod.py``), through the real launcher on
2 and 3 ranks, both frameworks: their bf16 averaging takes it under MPI (one allreduce) and
every element is a bfloat16 sum of the ranks' gradients in some order, each partial sum rounded
to nearest even, divided in float32, identical on every rank; under Gloo, which has no bf16
kernel, the alltoall (or allgather) path still gives the average."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers.jobs import REPO, hvdtrain, run_job

# Each framework's part: ``native`` and ``out`` (this rank's averaged gradients, as numpy) from
# the rank's gradients ``grads_of(rank)``, a list of float32 numpy arrays.
AVERAGES = {
    "torch": """
        import torch
        import horovod.torch as hvd
        from hvdtrain.comm.torch_compression import Bf16Torch, native_bf16_sum
        hvd.init()
        params = [torch.nn.Parameter(torch.zeros(37, 11)), torch.nn.Parameter(torch.zeros(5))]
        reducer = Bf16Torch(torch, hvd, params, bucket_bytes=1 << 20)
        for _ in range(2):  # the second step sends from the buffer the first one made
            out = reducer.average([torch.from_numpy(g) for g in grads_of(hvd.rank())])
        out = [o.numpy() for o in out]
    """,
    "tensorflow": """
        import tensorflow as tf
        import horovod.tensorflow as hvd
        from hvdtrain.comm.tf_compression import bf16_average, native_bf16_sum
        hvd.init()
        average = tf.function(lambda grads: bf16_average(hvd, hvd.size(), grads))
        out = [o.numpy() for o in average([tf.constant(g) for g in grads_of(hvd.rank())])]
    """,
}

CHECK = """
    size, rank = hvd.size(), hvd.rank()

    def bf16(x):  # float32 rounded to bfloat16, to nearest even (the MPI op's rounding)
        bits = np.asarray(x, np.float32).view(np.uint32)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & np.uint32(0xFFFF0000)
        return bits.view(np.float32)

    sent = [[bf16(g) for g in grads_of(r)] for r in range(size)]

    def folded(order, i):  # a left fold in bf16, each partial sum rounded, as the MPI op does
        total = sent[order[0]][i]
        for r in order[1:]:
            total = bf16(total + sent[r][i])
        return total / np.float32(size)

    def near(a, b):  # within a float32 ulp: TensorFlow divides by multiplying by 1/size
        return np.abs(a - b) <= np.spacing(np.abs(b))

    some_order = all(
        np.any([near(o, folded(order, i)) for order in itertools.permutations(range(size))],
               0).all()
        for i, o in enumerate(out))
    exact = [sum(grads_of(r)[i].astype(np.float64) for r in range(size)) / size
             for i in range(2)]
    scale = [np.max([np.abs(grads_of(r)[i]) for r in range(size)], 0).astype(np.float64)
             for i in range(2)]
    with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
        json.dump({"native": native_bf16_sum(hvd), "some_order": bool(some_order),
                   "finite": all(bool(np.isfinite(o).all()) for o in out),
                   "max_relative_error": max(float((np.abs(o - e) / s).max())
                                             for o, e, s in zip(out, exact, scale)),
                   "values": [o.flatten().tolist() for o in out]}, f)
"""

PREAMBLE = """
    import itertools, json, os, sys
    import numpy as np

    def grads_of(r):  # every rank can make every rank's gradients
        g = np.random.default_rng(r)
        return [(g.standard_normal((37, 11)) * 1e30).astype(np.float32),
                g.standard_normal(5).astype(np.float32)]
"""


@pytest.mark.parametrize(("framework", "ranks", "controller"), [
    ("torch", 3, "mpi"), ("torch", 3, "gloo"), ("torch", 2, "mpi"),
    ("tensorflow", 3, "mpi"), ("tensorflow", 2, "gloo"),
])
def test_ranks_sum_bf16_in_horovod_under_mpi(tmp_path: Path, framework: str, ranks: int,
                                             controller: str) -> None:
    script = tmp_path / "bf16_sum.py"
    script.write_text("".join(textwrap.dedent(part)
                              for part in (PREAMBLE, AVERAGES[framework], CHECK)))
    launcher = "mpirun" if controller == "mpi" else "horovodrun"
    done = run_job(hvdtrain("launch", "-np", str(ranks), "--launcher", launcher, "--controller",
                            controller, "--run-dir", str(tmp_path / "run"), "--",
                            sys.executable, str(script), str(tmp_path)), cwd=REPO, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(ranks)]
    assert all(r["native"] is (controller == "mpi") for r in results), results[0]["native"]
    assert all(r["values"] == results[0]["values"] for r in results)  # identical on every rank
    assert all(r["finite"] for r in results)  # 1e30: inside bf16's range
    if controller == "mpi":  # each partial sum rounded to bf16 to nearest even
        assert all(r["some_order"] for r in results)
    # bf16's rounding of the inputs and of the partial sums, 2^-8 of the largest each
    assert 0 < results[0]["max_relative_error"] <= 3 * 2 ** -8
