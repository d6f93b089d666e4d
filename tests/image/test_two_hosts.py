"""Two containers as two hosts, the MPI Operator pattern on one machine: a ``worker`` (sshd)
and a ``launcher`` on one ``--internal`` podman network (no way out), one ssh key mounted into
both at ~/.ssh, and /etc/mpi/hostfile naming both. The launcher waits for the worker's sshd,
then mpirun starts one rank on each over ssh."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hvdtrain.errors import ExitCode
from tests.helpers.image_lab import TEST_TIMEOUT_S, BuiltImage, Containers, note, podman
from tests.image.test_jobs import chown_to_image_user

pytestmark = pytest.mark.timeout(TEST_TIMEOUT_S)  # the first test waits for the builds

LAUNCHER, WORKER = "hvdl", "hvdw"
SSH_DIR = "/home/hvdtrain/.ssh"  # the image user's ~/.ssh (the MPIJob's sshAuthMountPath)
IDENTICAL = "identical on all ranks: True"


@dataclass(frozen=True)
class TwoHosts:
    network: str
    keys: Path
    hostfile: Path
    worker_address: str

    def launcher_args(self, hostfile: Path | None = None,
                      at: str = "/etc/mpi/hostfile") -> list[str]:
        """``podman run`` options of a launcher container on the network."""
        return ["--network", self.network, "--hostname", LAUNCHER,
                "--add-host", f"{WORKER}:{self.worker_address}", "-v", f"{self.keys}:{SSH_DIR}:ro",
                "-v", f"{hostfile or self.hostfile}:{at}:ro"]


def _worker_address(containers: Containers, network: str) -> str:
    template = f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}'
    deadline = time.monotonic() + 10
    while True:
        address = podman("inspect", "-f", template, containers.name("worker")).stdout.strip()
        if address and address != "<no value>":
            return address
        assert time.monotonic() < deadline, f"the worker container got no address on {network}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def two_hosts(image: BuiltImage, containers: Containers,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoHosts]:
    work = tmp_path_factory.mktemp("two-hosts")
    keys = work / "ssh"
    keys.mkdir()
    keygen = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                             "hvdtrain-image-test", "-f", str(keys / "id_ed25519")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert keygen.returncode == 0, f"ssh-keygen failed: {keygen.stderr}"
    (keys / "authorized_keys").write_bytes((keys / "id_ed25519.pub").read_bytes())
    chown_to_image_user(keys)
    keys.chmod(0o700)
    for key in keys.iterdir():
        key.chmod(0o600)
    hostfile = work / "hostfile"
    hostfile.write_text(f"{LAUNCHER} slots=1\n{WORKER} slots=1\n")
    hostfile.chmod(0o644)

    network = containers.network("net", "--internal")
    worker = containers.run("worker", "-d", "--network", network, "--hostname", WORKER,
                            "-v", f"{keys}:{SSH_DIR}:ro", image.name, "worker", timeout=120)
    assert worker.returncode == 0, f"the worker container did not start: {worker.stderr}"
    yield TwoHosts(network, keys, hostfile, _worker_address(containers, network))
    # Not left running for the rest of the session (the session's teardown removes it too).
    podman("rm", "-f", "-t", "0", containers.name("worker"))
    podman("network", "rm", "-f", network)


def test_the_launcher_waits_for_the_worker_then_plans_both(image: BuiltImage,
                                                           containers: Containers,
                                                           two_hosts: TwoHosts) -> None:
    done = containers.run("plan", "--rm", *two_hosts.launcher_args(), image.name,
                          "launcher", "plan", "--json", timeout=300)
    assert done.returncode == 0, f"launcher plan exited {done.returncode}:\n{done.stderr[-3000:]}"
    assert f"host {WORKER} is up" in done.stderr, \
        f"the launcher did not wait for {WORKER}'s sshd:\n{done.stderr[-3000:]}"
    plan = json.loads(done.stdout)
    hosts = [h["host"] for h in plan["hosts"]]
    assert (hosts, plan["size"]) == ([LAUNCHER, WORKER], 2), \
        f"expected 2 ranks on {LAUNCHER} and {WORKER}: hosts {hosts}, size {plan['size']}"
    note(f"two-host plan: the launcher waited for {WORKER}'s sshd, then: hosts {hosts}, "
         f"{plan['size']} ranks, source {plan['source']}")


def test_training_across_two_containers_over_ssh(image: BuiltImage, containers: Containers,
                                                  two_hosts: TwoHosts) -> None:
    """mpirun on the launcher starts rank 1 on the worker over ssh (breast-cancer: the
    cross-container network here is slow, docs/CONTAINERS.md)."""
    started = time.monotonic()
    done = containers.run("launcher", "--rm", *two_hosts.launcher_args(), image.name,
                          "launcher", "train", "--data", "breast-cancer", "--epochs", "2",
                          timeout=600)
    seconds = time.monotonic() - started
    out = done.stdout + done.stderr
    last = [line for line in out.splitlines() if "parameters identical" in line][-1:]
    assert done.returncode == 0, f"launcher train exited {done.returncode}:\n{out[-3000:]}"
    assert last and IDENTICAL in last[0], f"last line on parameters: {last}\n{out[-3000:]}"
    note(f"two hosts: 2 ranks on {LAUNCHER}+{WORKER} via mpirun over ssh in {seconds:.0f} s; "
         f"{last[0][:120]}")


def test_a_host_that_never_comes_is_named(image: BuiltImage, containers: Containers,
                                          two_hosts: TwoHosts, tmp_path: Path) -> None:
    """``never.invalid`` never resolves (RFC 2606): after HVDTRAIN_WAIT_TIMEOUT the launcher
    names it and exits ``ExitCode.PREFLIGHT``."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text(f"{LAUNCHER} slots=1\n{WORKER} slots=1\nnever.invalid slots=1\n")
    hostfile.chmod(0o644)
    done = containers.run("never", "--rm", *two_hosts.launcher_args(hostfile, at="/hostfile"),
                          "-e", "HVDTRAIN_WAIT_TIMEOUT=6", image.name,
                          "launcher", "train", "--hostfile", "/hostfile", timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode == ExitCode.PREFLIGHT, (
        f"launcher exited {done.returncode}, expected {ExitCode.PREFLIGHT} naming "
        f"never.invalid:\n{out[-2000:]}")
    named = [line for line in out.splitlines() if "host never.invalid never came" in line]
    assert named, f"the launcher did not name never.invalid:\n{out[-2000:]}"
    note(f"launcher wait: exit {done.returncode}; {named[0][:160]}")
