"""Helpers shared by the test tiers, as plain modules (like Horovod's ``test/utils/common.py``):
a test imports what it needs from here, never from another directory's ``conftest.py``.

- ``jobs``: running hvdtrain (or any launcher) as a job: a clean environment, its own process
  group, a hang turned into a failure that shows what it printed, waiting for a file while the
  job runs, reading its ``summary.json``.
- ``job_processes``: what is left of a job after its launcher was killed.
- ``samples``: the exactly-once check of runs with ``--record-samples``.
- ``small_fs``: a small tmpfs to fill up (root only).
- ``namespace_lab``: the network-namespace hosts (root only); its session fixture is
  registered once, in ``tests/conftest.py``.
- ``slurm_lab``: a real Slurm cluster on those hosts; its fixture is registered in
  ``tests/slurm/conftest.py``.
- ``image_lab``: the container image built with podman, and containers removed at the end;
  its fixtures are registered in ``tests/image/conftest.py``.
- ``teardown``: a lab's teardown run exactly once, however the session ends (finalizer,
  atexit, SIGTERM); used by the three labs.
"""
