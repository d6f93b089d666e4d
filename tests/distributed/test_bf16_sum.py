"""Horovod's bfloat16 sum (added by ``scripts/build_horovod.py``), through the real launcher on
2 and 3 ranks: ``Bf16Torch`` takes it under MPI (one allreduce a bucket) and every element is
a bfloat16 sum of the ranks' gradients in some order, rounded as torch rounds, divided in
float32, identical on every rank; under Gloo, which has no bf16 kernel, the alltoall path
still gives the average."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers.jobs import REPO, hvdtrain, run_job

SCRIPT = textwrap.dedent("""
    import itertools, json, os, sys
    import torch
    import horovod.torch as hvd
    from hvdtrain.comm.torch_compression import Bf16Torch, native_bf16_sum
    hvd.init()
    size, rank = hvd.size(), hvd.rank()

    def grads_of(r):  # every rank can make every rank's gradients
        g = torch.Generator().manual_seed(r)
        return [torch.randn(37, 11, generator=g) * 1e30, torch.randn(5, generator=g)]

    params = [torch.nn.Parameter(torch.zeros(37, 11)), torch.nn.Parameter(torch.zeros(5))]
    reducer = Bf16Torch(torch, hvd, params, bucket_bytes=1 << 20)
    for _ in range(2):  # the second step sends from the buffer the first one made
        out = reducer.average(grads_of(rank))
    sent = [[g.to(torch.bfloat16) for g in grads_of(r)] for r in range(size)]

    def folded(order, i):  # a left fold in bf16, each partial sum rounded, as the MPI op does
        total = sent[order[0]][i]
        for r in order[1:]:
            total = (total.float() + sent[r][i].float()).to(torch.bfloat16)
        return total.float() / size

    orders = [folded(order, i) for i in range(2) for order in itertools.permutations(range(size))]
    per_tensor = len(orders) // 2
    some_order = all(
        bool(torch.stack([(o == c) for c in orders[i * per_tensor:(i + 1) * per_tensor]])
             .any(0).all())
        for i, o in enumerate(out))
    exact = [sum(grads_of(r)[i].double() for r in range(size)) / size for i in range(2)]
    scale = [torch.stack([grads_of(r)[i].abs() for r in range(size)]).amax(0).double()
             for i in range(2)]
    with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
        json.dump({"native": native_bf16_sum(hvd), "some_order": some_order,
                   "finite": all(bool(torch.isfinite(o).all()) for o in out),
                   "max_relative_error": max(float(((o.double() - e).abs() / s).max())
                                             for o, e, s in zip(out, exact, scale)),
                   "values": [o.flatten().tolist() for o in out]}, f)
""")


@pytest.mark.parametrize(("ranks", "controller"), [(3, "mpi"), (3, "gloo"), (2, "mpi")])
def test_ranks_sum_bf16_in_horovod_under_mpi(tmp_path: Path, ranks: int, controller: str) -> None:
    script = tmp_path / "bf16_sum.py"
    script.write_text(SCRIPT)
    launcher = "mpirun" if controller == "mpi" else "horovodrun"
    done = run_job(hvdtrain("launch", "-np", str(ranks), "--launcher", launcher, "--controller",
                            controller, "--run-dir", str(tmp_path / "run"), "--",
                            sys.executable, str(script), str(tmp_path)), cwd=REPO, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(ranks)]
    assert all(r["native"] is (controller == "mpi") for r in results), results[0]["native"]
    assert all(r["values"] == results[0]["values"] for r in results)  # identical on every rank
    assert all(r["finite"] for r in results)  # 1e30: inside bf16's range
    if controller == "mpi":  # each partial sum rounded to bf16 as torch rounds it
        assert all(r["some_order"] for r in results)
    # bf16's rounding of the inputs and of the partial sums, 2^-8 of the largest each
    assert 0 < results[0]["max_relative_error"] <= 3 * 2 ** -8
