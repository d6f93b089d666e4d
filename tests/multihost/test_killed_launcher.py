"""Nothing of a job outlives its launcher killed with SIGKILL, on any host (issue 22, item 3).

The OOM killer is the usual cause on clusters: ``hvdtrain train`` (or ``launch``) dies at once
and stops nothing. The launcher runs in the root namespace like a login node, the ranks on
hvdh1 and hvdh2 over ssh; once every rank runs, the launcher alone gets SIGKILL, and within
10 s nothing may be left: no mpirun or horovodrun here, no orted, sshd session, rank wrapper
or rank on either host (``tests/helpers/job_processes.py`` says how they are found).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.job_processes import (
    kill_launcher,
    leftovers_after,
    output,
    remove_leftovers,
    start_job,
    wait_for_ranks,
)
from tests.helpers.jobs import PYTHON, REPO, lab_env
from tests.helpers.namespace_lab import NamespaceHosts

pytestmark = pytest.mark.multihost
pytest.importorskip("horovod.torch")

SCRIPT = REPO / "tests" / "fixtures" / "allreduce_loop.py"
# long enough to be mid-training when the launcher is killed, tiny per step
TRAIN = ("--data", "digits", "--batch-size", "16", "--epochs", "20", "--step-delay", "0.2",
         "--start-timeout", "120")


@pytest.fixture
def hostfile(namespace_hosts: NamespaceHosts, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "hosts.txt"
    path.write_text("".join(f"{host} slots=1\n" for host in namespace_hosts.hosts))
    yield path


def _kill_and_check(lab: NamespaceHosts, argv: list[str], tmp_path: Path, ready: Path,
                    suffix: str) -> None:
    """Start ``argv``, wait until both ranks wrote ``ready/rank-N.<suffix>``, SIGKILL the
    launcher and assert that nothing of the job is left 10 s later."""
    run_dir, out_dir = tmp_path / "run", tmp_path / "out"
    proc = start_job(argv, lab_env(), out_dir, cwd=REPO)
    try:
        wait_for_ranks(ready, 2, suffix, proc, 240, out_dir)
        kill_launcher(proc)
        killed = time.monotonic()
        left = leftovers_after(run_dir, lab.processes)
        assert left == {}, f"left 10 s after the launcher was killed: {left}\n{output(out_dir)}"
        print(f"nothing of the job left {time.monotonic() - killed:.1f} s after the kill")
    finally:
        remove_leftovers(run_dir, proc, lab.processes)


@pytest.mark.parametrize(("launcher", "controller"), [("mpirun", "mpi"),
                                                      ("horovodrun", "gloo")])
def test_killed_train_launcher_leaves_nothing_on_any_host(
        namespace_hosts: NamespaceHosts, hostfile: Path, tmp_path: Path, launcher: str,
        controller: str) -> None:
    argv = [PYTHON, "-m", "hvdtrain", "train", "--hostfile", str(hostfile),
            "--launcher", launcher, "--controller", controller,
            "--run-dir", str(tmp_path / "run"), *TRAIN]
    _kill_and_check(namespace_hosts, argv, tmp_path, tmp_path / "run" / "ranks", "ready.json")


def test_killed_elastic_launcher_leaves_nothing_on_any_host(
        namespace_hosts: NamespaceHosts, hostfile: Path, tmp_path: Path) -> None:
    argv = [PYTHON, "-m", "hvdtrain", "train", "--elastic", "-np", "2", "--min-np", "1",
            "--max-np", "2", "--hostfile", str(hostfile), "--run-dir", str(tmp_path / "run"),
            "--elastic-timeout", "60", *TRAIN]
    _kill_and_check(namespace_hosts, argv, tmp_path, tmp_path / "run" / "ranks", "ready.json")


@pytest.mark.parametrize("launcher", ["mpirun", "horovodrun"])
def test_killed_launch_of_a_users_script_leaves_nothing_on_any_host(
        namespace_hosts: NamespaceHosts, hostfile: Path, tmp_path: Path,
        launcher: str) -> None:
    looping = tmp_path / "looping"
    looping.mkdir()
    controller = "mpi" if launcher == "mpirun" else "gloo"
    argv = [PYTHON, "-m", "hvdtrain", "launch", "--hostfile", str(hostfile),
            "--launcher", launcher, "--controller", controller,
            "--run-dir", str(tmp_path / "run"), "--", PYTHON, str(SCRIPT), "300",
            str(looping)]
    _kill_and_check(namespace_hosts, argv, tmp_path, looping, "looping")
