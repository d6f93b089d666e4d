"""hvdtrain across real (namespace) hosts that share no run directory.

The launcher runs in the root namespace like a login node; ranks run on hvdh1 and hvdh2 over
ssh. The run directory lives under the private directory, which each host sees as its own
empty tmpfs: rank status reaches the supervisor only over the launcher's channel, and rank 0's
outputs stay on rank 0's host. Every rank's own report (summary.json, written on rank 0's host
from an allgather) says where it ran.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.jobs import PYTHON, read_summary, run_cli
from tests.helpers.namespace_lab import NamespaceHosts

pytestmark = pytest.mark.multihost
pytest.importorskip("horovod.torch")



def _hostfile(tmp_path: Path, lab: NamespaceHosts) -> Path:
    path = tmp_path / "hosts.txt"
    path.write_text("".join(f"{host} slots=1\n" for host in lab.hosts))
    return path


@pytest.fixture(autouse=True)
def _remove_launcher_side_run_dirs(namespace_hosts: NamespaceHosts) -> Iterator[None]:
    """Remove what each test wrote under the private directory: the launcher's view (the root
    filesystem) and each host's own tmpfs, so later tests find them as they were."""
    before = set(namespace_hosts.private_dir.iterdir())
    yield
    for path in set(namespace_hosts.private_dir.iterdir()) - before:
        shutil.rmtree(path, ignore_errors=True)
    private = namespace_hosts.private_dir
    for host in namespace_hosts.hosts:
        namespace_hosts.ssh(host, f"rm -rf {private}/run-* {private}/fail {private}/user",
                            timeout=60)


def _nothing_left(lab: NamespaceHosts) -> dict[str, list[str]]:
    deadline = time.monotonic() + 20
    while True:
        left = lab.processes()
        if not any(left.values()) or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


@pytest.mark.parametrize(("launcher", "controller", "network"), [
    ("mpirun", "mpi", None),
    ("horovodrun", "gloo", None),  # horovodrun alone would advertise an unreachable address
    ("horovodrun", "gloo", "10.231.0.0/24"),  # a network, resolved to an interface per host
])
def test_train_across_hosts_without_a_shared_run_directory(
        namespace_hosts: NamespaceHosts, tmp_path: Path, launcher: str, controller: str,
        network: str | None) -> None:
    lab = namespace_hosts
    run_dir = lab.private_dir / f"run-{launcher}-{tmp_path.name}"
    extra = ["--network-interface", network] if network else []
    done = run_cli([PYTHON, "-m", "hvdtrain", "train", "--hostfile", str(_hostfile(tmp_path, lab)),
                 "--launcher", launcher, "--controller", controller, "--run-dir", str(run_dir),
                 "--data", "breast-cancer", "--epochs", "2", "--start-timeout", "90",
                 "--no-fetch-results", *extra])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    first, second = lab.hosts
    assert f"results in {first}:{run_dir};" in done.stderr  # where they are, not a local path
    # rank 0's outputs are on rank 0's host, not on the launcher's or the other host's
    summary = json.loads(lab.ssh(first, ["cat", str(run_dir / "summary.json")],
                                 check=True).stdout)
    assert lab.ssh(second, ["test", "-e", str(run_dir / "summary.json")]).returncode != 0
    assert not (run_dir / "summary.json").exists()
    assert summary["world_size"] == 2 and summary["parameters_identical"] is True
    where = [(r["rank"], r["host"], r["local_rank"], r["placement_warning"])
             for r in summary["ranks"]]
    assert where == [(0, first, 0, None), (1, second, 0, None)]  # as the plan placed them
    # the launcher knows how each rank ended although it cannot see their files
    exits = sorted(json.loads(p.read_text())["host"]
                   for p in (run_dir / "ranks").glob("rank-*.exit.json"))
    assert exits == [first, second]
    assert _nothing_left(lab) == {h: [] for h in lab.hosts}


def test_ranks_elsewhere_use_what_the_launcher_resolved_and_results_come_back(
        namespace_hosts: NamespaceHosts, tmp_path: Path) -> None:
    """An ``HVDTRAIN_*`` variable, a ``--config`` file that exists only on the launcher's host
    and a relative ``--data`` path all reach ranks on other hosts (before, they trained the
    defaults without a word); then rank 0's results and every rank's logs are copied back."""
    lab = namespace_hosts
    work = lab.private_dir / f"work-{tmp_path.name}"  # the launcher's cwd: only on its host
    work.mkdir()
    (work / "run.yaml").write_text("batch_size: 16\nlr: 0.002\n")
    data = tmp_path / "data.csv"  # on every host, but relative to a cwd only the launcher has
    data.write_text("a,b,label\n" + "".join(f"{i % 17},{(i * 7) % 13},{i % 2}\n"
                                             for i in range(120)))
    run_dir = lab.private_dir / f"run-resolved-{tmp_path.name}"
    done = run_cli([PYTHON, "-m", "hvdtrain", "train", "--hostfile", str(_hostfile(tmp_path, lab)),
                 "--config", "run.yaml", "--data", os.path.relpath(data, work),
                 "--run-dir", str(run_dir), "--start-timeout", "90"],
                cwd=work, HVDTRAIN_EPOCHS="2")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    launched = json.loads((run_dir / "launch.json").read_text())
    resolved = json.loads(launched["env"]["HVDTRAIN_RANK_OPTIONS"])
    assert (resolved["epochs"], resolved["batch_size"], resolved["lr"], resolved["data"]) == (
        2, 16, 0.002, str(data))
    # summary.json was written on rank 0's host and copied back: the ranks used exactly that
    assert (run_dir / "summary.json").exists(), done.stderr[-3000:]
    summary = read_summary(run_dir)
    assert summary["epochs_run"] == 2
    assert summary["config"] == {key: resolved[key] for key in summary["config"]}
    assert [r["host"] for r in summary["ranks"]] == list(lab.hosts)
    for rank in (0, 1):  # every rank's logs, each from its own host
        assert (run_dir / "logs" / f"rank-{rank}.out").exists()
        assert (run_dir / "logs" / f"rank-{rank}.err").exists()
    assert (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    assert f"copied into {run_dir} from {lab.hosts[0]}: " in done.stderr
    assert f"results in {run_dir} (copied)" in done.stderr
    assert _nothing_left(lab) == {h: [] for h in lab.hosts}


def test_first_failure_on_another_host_is_reported(namespace_hosts: NamespaceHosts,
                                                   tmp_path: Path) -> None:
    lab = namespace_hosts
    script = tmp_path / "fail_on_rank1.py"
    script.write_text(textwrap.dedent("""
        import os, sys, time
        if os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("HOROVOD_RANK")) == "1":
            print("disk on fire", file=sys.stderr)
            sys.exit(3)
        time.sleep(60)
    """))
    start = time.monotonic()
    done = run_cli([PYTHON, "-m", "hvdtrain", "launch", "--hostfile",
                 str(_hostfile(tmp_path, lab)), "--run-dir", str(lab.private_dir / "fail"),
                 "--", sys.executable, str(script)], timeout=120)
    assert done.returncode == 3, done.stderr[-3000:]
    second = lab.hosts[1]
    assert f"rank 1 on {second} failed first (exit code 3)" in done.stderr
    assert "--- last lines of rank 1 stderr ---\ndisk on fire\n---" in done.stderr
    assert f"{second}:{lab.private_dir / 'fail' / 'logs'}" in done.stderr  # where the logs are
    assert time.monotonic() - start < 60
    assert _nothing_left(lab) == {h: [] for h in lab.hosts}


def test_launch_a_users_horovod_script_across_hosts(namespace_hosts: NamespaceHosts,
                                                    tmp_path: Path) -> None:
    lab = namespace_hosts
    results = tmp_path / "results"  # on the shared root filesystem, unlike the run directory
    results.mkdir()
    script = tmp_path / "allreduce.py"
    script.write_text(textwrap.dedent("""
        import json, socket, sys
        import torch
        import horovod.torch as hvd
        hvd.init()
        total = hvd.allreduce(torch.tensor([float(hvd.rank() + 1)]), op=hvd.Sum).item()
        with open(f"{sys.argv[1]}/rank{hvd.rank()}.json", "w") as out:
            json.dump({"host": socket.gethostname(), "local_rank": hvd.local_rank(),
                       "size": hvd.size(), "sum": total}, out)
    """))
    done = run_cli([PYTHON, "-m", "hvdtrain", "launch", "--hostfile",
                 str(_hostfile(tmp_path, lab)), "--run-dir", str(lab.private_dir / "user"),
                 "--", sys.executable, str(script), str(results)], timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [json.loads((results / f"rank{r}.json").read_text()) for r in range(2)]
    assert [(r["host"], r["local_rank"], r["size"], r["sum"]) for r in reports] == [
        (lab.hosts[0], 0, 2, 3.0), (lab.hosts[1], 0, 2, 3.0)]
    assert "on the ranks' own hosts" in done.stderr  # where the logs are
    assert _nothing_left(lab) == {h: [] for h in lab.hosts}


def test_an_unreachable_host_fails_fast_before_launch(namespace_hosts: NamespaceHosts,
                                                      tmp_path: Path) -> None:
    lab = namespace_hosts
    second = lab.hosts[1]
    lab.stop_sshd(second)
    try:
        start = time.monotonic()
        done = run_cli([PYTHON, "-m", "hvdtrain", "train", "--hostfile",
                     str(_hostfile(tmp_path, lab)), "--run-dir", str(tmp_path / "run")],
                    timeout=60)
        elapsed = time.monotonic() - start
    finally:
        lab.start_sshd(second)
    assert done.returncode == 5, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("hvdtrain: error")]
    assert len(errors) == 1 and f"{second}: ssh: sshd not reachable" in errors[0]
    assert "Traceback" not in done.stderr and elapsed < 30
    assert not (tmp_path / "run" / "launch.json").exists()  # nothing was launched
    assert _nothing_left(lab) == {h: [] for h in lab.hosts}


def test_a_network_no_host_has_fails_fast_naming_the_host(namespace_hosts: NamespaceHosts,
                                                          tmp_path: Path) -> None:
    """Ranks that could not reach each other's ports on the chosen network: said before launch
    (TEST-NET-3, 203.0.113.0/24, is on no host and is never contacted)."""
    lab = namespace_hosts
    start = time.monotonic()
    done = run_cli([PYTHON, "-m", "hvdtrain", "train", "--hostfile", str(_hostfile(tmp_path, lab)),
                 "--network-interface", "203.0.113.0/24", "--run-dir", str(tmp_path / "run")],
                timeout=60)
    assert done.returncode == 5, done.stderr
    assert f"{lab.hosts[0]}: network-interface: 203.0.113.0/24 not on this host" in done.stderr
    assert "Traceback" not in done.stderr and time.monotonic() - start < 30
    assert _nothing_left(lab) == {h: [] for h in lab.hosts}
