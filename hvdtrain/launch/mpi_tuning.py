"""Open MPI's allreduce between hosts: for large buffers the ring on 3 ranks and more,
recursive doubling on exactly 2.

Why: for 3 or more ranks Open MPI's fixed decision rules pick an allreduce that, for large
buffers between hosts, moved about a third of what the link carries. Measured on namespace
hosts joined by a tc-shaped 1 Gbit/s link (docs/BENCHMARKS.md, "Allreduce across 3 hosts"):
a 16 MiB allreduce among 3 hosts took 617 ms with Open MPI's choice and 190 ms with the ring
(the ring-allreduce model predicts 179 ms at the line rate), while DDP's Gloo ring trained
1.7x faster than Horovod over MPI. On 2 ranks Open MPI's choice ran at the line rate in some
runs and 35 % slower in others (4 MiB: 33–46 ms through Horovod, its own MPI_Allreduce always
at two thirds of the line); recursive doubling (for 2 ranks, each sends its whole buffer once,
the bytes of a ring) took 35–37 ms every time, and the 2-host MLP of ``bench train`` went from
0.92 to 1.02 of DDP's speed (docs/BENCHMARKS.md, "Open MPI's allreduce between hosts").

The rank wrapper applies this per host, before the rank's ``MPI_Init``: it writes an Open MPI
dynamic-rules file into the run directory (on that host) saying "allreduce, buffers of 1 MiB
and more: on 2 ranks recursive doubling (algorithm 3), on 3 ranks and more the ring (4);
smaller: Open MPI's own choice (0)", and points the rank at it. Only for Open MPI ranks of a
plan that spans several hosts, and never when the user set any of these variables (theirs
win).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from hvdtrain.atomic import atomic_write_text

# Open MPI (coll/tuned) dynamic rules: number of collectives; collective id (ALLREDUCE = 2);
# number of communicator sizes; the smallest size the rules apply to; number of message
# sizes; then per message size "bytes algorithm fan-in/out segment-size" (algorithm 0:
# Open MPI's fixed decision, 3: recursive doubling, 4: ring); the next communicator size
# likewise. A rule holds from its size up to the next one's.
RULES_FROM_BYTES = 1 << 20  # below: Open MPI's own choice
RULES = (f"1\n2\n2\n"
         f"2\n2\n0 0 0 0\n{RULES_FROM_BYTES} 3 0 0\n"
         f"3\n2\n0 0 0 0\n{RULES_FROM_BYTES} 4 0 0\n")
RULES_FILE = "openmpi-allreduce-rules.conf"
USE_RULES = "OMPI_MCA_coll_tuned_use_dynamic_rules"
RULES_PATH = "OMPI_MCA_coll_tuned_dynamic_rules_filename"
USER_CHOICES = (USE_RULES, RULES_PATH, "OMPI_MCA_coll_tuned_allreduce_algorithm",
                "OMPI_MCA_coll")


def rules_for_plan(env: Mapping[str, str], hosts_in_plan: int) -> bool:
    """Several hosts, and the user chose no Open MPI collective settings of their own."""
    return hosts_in_plan >= 2 and not any(name in env for name in USER_CHOICES)


def wants_rules(env: Mapping[str, str], hosts_in_plan: int) -> bool:
    """``rules_for_plan`` in an Open MPI rank (``OMPI_COMM_WORLD_RANK`` set)."""
    return "OMPI_COMM_WORLD_RANK" in env and rules_for_plan(env, hosts_in_plan)


def with_allreduce_rules(env: Mapping[str, str], run_dir: Path,
                         hosts_in_plan: int) -> dict[str, str]:
    """``env`` pointing Open MPI at the allreduce rules (written to ``run_dir`` on this
    host)."""
    child = dict(env)
    if not wants_rules(env, hosts_in_plan):
        return child
    rules = run_dir / RULES_FILE
    if not rules.is_file() or rules.read_text() != RULES:
        # ranks of one host start together: each writes its own file, then renames it over
        atomic_write_text(rules, RULES)
    child[USE_RULES] = "1"
    child[RULES_PATH] = str(rules)
    return child
