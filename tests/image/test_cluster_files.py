"""The ready-made cluster files under docker/: the Kubernetes MPIJob has what the MPI Operator
requires, and the Slurm batch script, run in the image under a simulated allocation, plans
one rank per task."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.helpers.image_lab import TEST_TIMEOUT_S, BuiltImage, Containers, note
from tests.helpers.jobs import REPO

pytestmark = pytest.mark.timeout(TEST_TIMEOUT_S)  # the first test waits for the builds

MPIJOB = REPO / "docker" / "k8s" / "mpijob.yaml"
SLURM_DIR = REPO / "docker" / "slurm"
# Two nodes, four tasks each: what `sbatch --nodes=2 --ntasks-per-node=4` gives the script.
ALLOCATION = {
    "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu-[01-02]", "SLURM_NTASKS_PER_NODE": "4",
    "SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS": "8", "SLURM_CPUS_PER_TASK": "2",
    "SLURM_GPUS_PER_NODE": "4",
}


def _container(replica: dict[str, Any]) -> dict[str, Any]:
    containers = replica.get("template", {}).get("spec", {}).get("containers") or [{}]
    first: dict[str, Any] = containers[0]
    return first


def test_the_mpijob_has_what_the_operator_requires() -> None:
    """Parsed here (PyYAML), not by a cluster: apiVersion, kind, slots, both replica specs
    with their containers, the entrypoint modes, and ~/.ssh for the operator's key."""
    job = yaml.safe_load(MPIJOB.read_text())
    spec = job.get("spec", {})
    replicas = spec.get("mpiReplicaSpecs", {})
    launcher, worker = replicas.get("Launcher", {}), replicas.get("Worker", {})
    checks = {
        "apiVersion kubeflow.org/v2beta1": job.get("apiVersion") == "kubeflow.org/v2beta1",
        "kind MPIJob": job.get("kind") == "MPIJob",
        "spec.slotsPerWorker is a number": isinstance(spec.get("slotsPerWorker"), int),
        "one launcher": launcher.get("replicas") == 1,
        "two workers": worker.get("replicas") == 2,
        "the launcher runs `launcher train`": _container(launcher).get("args", [])[:2]
            == ["launcher", "train"],
        "workers run `worker`": _container(worker).get("args", [])[:1] == ["worker"],
        "sshAuthMountPath is the user's ~/.ssh":
            spec.get("sshAuthMountPath") == "/home/hvdtrain/.ssh",
    }
    for role, replica in (("Launcher", launcher), ("Worker", worker)):
        containers = replica.get("template", {}).get("spec", {}).get("containers", [])
        checks[f"{role}.template.spec.containers[] with image and name"] = bool(containers) and \
            all(c.get("image") and c.get("name") for c in containers)
    wrong = [what for what, ok in checks.items() if not ok]
    assert wrong == [], f"{MPIJOB.relative_to(REPO)}: missing or wrong: {'; '.join(wrong)}"
    note(f"MPIJob: {worker['replicas']} workers x {spec['slotsPerWorker']} slot(s)")


def test_the_sbatch_script_plans_the_allocation(image: BuiltImage,
                                                 containers: Containers) -> None:
    """docker/slurm/hvdtrain.sbatch with HVDTRAIN_COMMAND=plan under a simulated 2x4
    allocation: 8 ranks, 4 on each node, local ranks 0-3, planned from the allocation."""
    env = [arg for name, value in ALLOCATION.items() for arg in ("-e", f"{name}={value}")]
    done = containers.run("slurm", "--rm", "--network", "none", "-v", f"{SLURM_DIR}:/slurm:ro",
                          *env, "-e", "HVDTRAIN_COMMAND=plan", image.name,
                          "bash", "/slurm/hvdtrain.sbatch", "--json", timeout=300)
    assert done.returncode == 0, \
        f"the sbatch script (plan) exited {done.returncode}:\n{done.stderr[-3000:]}"
    plan = json.loads(done.stdout)
    ranks = plan["ranks"]

    def field(rank: dict[str, Any], *names: str) -> Any:
        return next(rank[n] for n in names if n in rank)

    hosts = [field(r, "host", "hostname") for r in ranks]
    assert plan["size"] == 8, f"planned {plan['size']} ranks, not 8: {plan}"
    assert hosts == ["gpu-01"] * 4 + ["gpu-02"] * 4, f"ranks placed on {hosts}"
    assert [field(r, "local_rank") for r in ranks] == [0, 1, 2, 3] * 2, ranks
    assert "slurm" in json.dumps(plan["source"]).lower(), \
        f"not planned from the Slurm allocation: source {plan['source']}"
    gpus = [field(r, "gpu", "gpus") for r in ranks]
    note(f"sbatch plan: 8 ranks, gpu-01 x4, gpu-02 x4, gpus {gpus[:4]}; source {plan['source']}")
