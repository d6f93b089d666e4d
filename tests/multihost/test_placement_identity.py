"""The placement check across real hosts, whatever the hostfile calls them (issue 22, item 2).

A hostfile naming the hosts by address (the common case on clusters) or by an ``/etc/hosts``
alias launches without the "rank N was planned on ... but the launcher started it on ..."
warning, because each rank compares what its host *is* (names and interface addresses) with
what the planned name resolves to. The check still fires on a real host for a plan that puts
the rank on the other one.

The lab's hosts share ``/etc/hosts`` with this machine: the alias test adds one marked block
and removes exactly that block again, whatever happens.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hvdtrain.cluster.hosts import Host
from hvdtrain.cluster.pinning import encode_plan
from hvdtrain.cluster.placement import plan_placement
from hvdtrain.launch.protocol import PLAN_ENV
from tests.helpers.jobs import PYTHON, REPO, run_cli
from tests.helpers.namespace_lab import NamespaceHosts

pytestmark = pytest.mark.multihost
pytest.importorskip("horovod.torch")

HOSTS_FILE = Path("/etc/hosts")
BEGIN, END = "# hvdtrain-test-aliases begin", "# hvdtrain-test-aliases end"
WARNING = "was planned on"


def _rewrite(path: Path, text: str) -> None:
    """In place, not by rename: /etc/hosts may be a bind mount (as netns_hosts.sh does)."""
    with path.open("r+", encoding="utf-8") as handle:
        handle.write(text)
        handle.truncate()


def _without_block(text: str) -> str:
    kept, inside = [], False
    for line in text.splitlines(keepends=True):
        if line.rstrip("\n") == BEGIN:
            inside = True
        elif inside and line.rstrip("\n") == END:
            inside = False
        elif not inside:
            kept.append(line)
    return "".join(kept)


@contextmanager
def etc_hosts_aliases(aliases: dict[str, str]) -> Iterator[None]:
    """``name → address`` lines in /etc/hosts for the duration (one marked block)."""
    original = HOSTS_FILE.read_text()
    assert BEGIN not in original, "a block of an earlier run was left in /etc/hosts"
    block = "".join(f"{address} {name}\n" for name, address in aliases.items())
    glue = "" if not original or original.endswith("\n") else "\n"
    try:
        _rewrite(HOSTS_FILE, f"{original}{glue}{BEGIN}\n{block}{END}\n")
        yield
    finally:
        _rewrite(HOSTS_FILE, _without_block(HOSTS_FILE.read_text()))
        assert BEGIN not in HOSTS_FILE.read_text()


def _aliases(lab: NamespaceHosts) -> dict[str, str]:
    """A second name per host (the lab's ssh config matches ``hvdh*``, so ssh reaches it)."""
    return {f"{host}-data": address for host, address in zip(lab.hosts, lab.addresses)}


@pytest.fixture
def run_dir(namespace_hosts: NamespaceHosts, tmp_path: Path) -> Iterator[Path]:
    """A run directory under the private directory, removed on every host afterwards."""
    path = namespace_hosts.private_dir / f"run-placement-{tmp_path.name}"
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)
    for host in namespace_hosts.hosts:
        namespace_hosts.ssh(host, ["rm", "-rf", str(path)], timeout=60)


@pytest.mark.parametrize("naming", ["addresses", "aliases"])
def test_a_correct_launch_does_not_warn_about_placement(
        namespace_hosts: NamespaceHosts, tmp_path: Path, run_dir: Path, naming: str) -> None:
    lab = namespace_hosts
    names = list(lab.addresses) if naming == "addresses" else list(_aliases(lab))
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("".join(f"{name} slots=1\n" for name in names))
    with etc_hosts_aliases(_aliases(lab) if naming == "aliases" else {}):
        done = run_cli([PYTHON, "-m", "hvdtrain", "train", "--hostfile", str(hostfile),
                     "--run-dir", str(run_dir), "--data", "breast-cancer", "--epochs", "1",
                     "--start-timeout", "90"])
    output = done.stdout + done.stderr
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert WARNING not in output, output[-4000:]
    summary = json.loads(lab.ssh(lab.hosts[0], ["cat", str(run_dir / "summary.json")],
                                 check=True).stdout)
    where = [(r["rank"], r["host"], r["placement_warning"]) for r in summary["ranks"]]
    assert where == [(0, lab.hosts[0], None), (1, lab.hosts[1], None)]


_CHECK = """
import json, os
from hvdtrain.training.host_identity import device_choice, this_host
here = this_host(os.environ)
print(json.dumps({"name": here.name, "addresses": sorted(here.addresses),
                  "mismatch": [device_choice(r, 0, os.environ, gpus_visible=0).mismatch
                               for r in range(2)]}))
"""


def _check_on(lab: NamespaceHosts, host: str, planned: list[str]) -> dict[str, Any]:
    """The rank-side check, run on ``host`` for ranks 0 and 1 of a plan over ``planned``."""
    plan = encode_plan(plan_placement([Host(name, 1, (0,)) for name in planned]))
    done = lab.ssh(host, ["env", f"{PLAN_ENV}={plan}", f"PYTHONPATH={REPO}", PYTHON, "-c",
                          _CHECK], timeout=120, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_rank_side_check_tells_the_hosts_apart(namespace_hosts: NamespaceHosts) -> None:
    """On hvdh2, rank 1 is where every plan says it is and rank 0 is not: by address, by
    hostname and by alias, each side of the comparison spelled differently."""
    lab = namespace_hosts
    first, second = lab.hosts
    with etc_hosts_aliases(_aliases(lab)):
        plans = {"addresses": list(lab.addresses), "names": list(lab.hosts),
                 "aliases": list(_aliases(lab)),
                 "mixed": [f"{first}-data", lab.addresses[1]]}
        results = {kind: _check_on(lab, second, planned) for kind, planned in plans.items()}
    for kind, result in results.items():
        assert result["name"] == second, kind
        assert lab.addresses[1] in result["addresses"], kind  # its interface, seen in its netns
        rank0, rank1 = result["mismatch"]
        assert rank1 is None, (kind, rank1)
        assert rank0 is not None and f"rank 0 was planned on {plans[kind][0]}" in rank0, kind
        assert f"started it on {second}" in rank0, kind
