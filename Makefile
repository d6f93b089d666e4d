# The two commands of the README. Each installs what is missing first (scripts/setup.sh is
# idempotent: a second run takes seconds and reuses the cached Horovod wheel).
SHELL := /bin/bash
VENV := .venv

.PHONY: run test setup lint

setup:
	bash scripts/setup.sh

# The main job on its built-in default: a real 2-rank training run on this machine.
run: setup
	$(VENV)/bin/hvdtrain train -np 2

# The whole test suite (unit, framework and real multi-rank tests through mpirun/horovodrun),
# except the Slurm tests: they have a target of their own.
test: setup
	$(VENV)/bin/python -m pytest -q -ra -m "not slurm"

lint: setup
	$(VENV)/bin/ruff check hvdtrain scripts tests bench
	$(VENV)/bin/mypy

# The container image: build docker/Dockerfile with podman (local debootstrapped base) and
# check it end to end: default job, volumes, SIGTERM, exit codes, two hosts over ssh, lint,
# the k8s and Slurm files. Prints image size and cold/warm build times (README "Containers and clusters").
.PHONY: image-test
image-test:
	bash docker/test-image.sh

# A real Slurm cluster on this machine (root; apt-gets slurmd, slurmctld, munge if missing):
# slurmctld here, one slurmd per namespace host; sbatch, salloc, srun and preemption with
# requeue, end to end (tests/slurm, scripts/slurm_lab.sh; 3-6 min). README "On a Slurm cluster".
.PHONY: slurm-test
slurm-test: setup
	$(VENV)/bin/python -m pytest -q -ra tests/slurm
