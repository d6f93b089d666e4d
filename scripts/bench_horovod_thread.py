"""Benchmark: what Horovod's background thread costs a rank's compute when nothing is sent.

Why it exists: Horovod's background thread runs a coordination collective every cycle
(``HOROVOD_CYCLE_TIME``), and MPI waits for the other ranks' part by polling. Where ranks
share cores (more ranks than cores, or torch threads on every core) those polls are taken
from the training thread. This measures it in each rank: the speed of a one-thread matmul
loop before ``hvd.init()`` (the baseline, same process, every rank computing at once) and
after it. Run it under the launcher, e.g. between the namespace hosts of
``scripts/netns_hosts.sh``:

    hvdtrain launch -H hvdh1:1,hvdh2:1 --cycle-time-ms 0.2 -- \\
        .venv/bin/python scripts/bench_horovod_thread.py

Each rank prints one JSON line (the terminal shows rank 0's).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any


def matmuls_per_second(torch: Any, seconds: float) -> float:
    a = torch.randn(512, 512)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ a
        count += 1
    return count / (time.perf_counter() - start)


def main() -> None:
    import torch

    torch.set_num_threads(1)
    before = matmuls_per_second(torch, 5.0)
    import horovod.torch as hvd

    hvd.init()
    hvd.allreduce(torch.ones(1), name="start")  # every rank past init before timing
    after = matmuls_per_second(torch, 5.0)
    print(json.dumps({"rank": hvd.rank(), "size": hvd.size(),
                      "cycle_time_ms": os.environ.get("HOROVOD_CYCLE_TIME"),
                      "matmuls_per_s_before_init": round(before, 1),
                      "matmuls_per_s_after_init": round(after, 1),
                      "after_vs_before": round(after / before, 2)}), flush=True)


if __name__ == "__main__":
    main()
