"""``hvdtrain preflight``: is every host of a plan ready to run ranks? One record per check.

Every host is probed in parallel, each within one per-host deadline that bounds all its steps
(name resolution, ``ssh``, the probe), so a dead host costs at most ``timeout`` seconds and
never a hang: ``ssh`` runs with ``BatchMode=yes`` (a password prompt is a failure, not a
wait), without stdin, in its own process group that is killed when the deadline passes, and
the probe on the host ends itself by the same deadline. Localhost-type hosts are probed in
process, without ``ssh``.

The package is cut along those seams, so the judgement can be read (and tested) without the
I/O, and a caller that only reads a report imports no ``ssh`` machinery:

* ``report``: what a preflight found, as values (``HostCheck``, ``PreflightReport``).
* ``checks``: pure judgement: ``compare``, ``network_checks``, ``classify_ssh_failure``,
  ``classify_probe_failure``, ``parse_probe_output``, ``smoke_result`` are functions of probe
  results and exit statuses (the unit tests feed them fake ones). A failure is a ``HostCheck``
  whose ``fix`` is one line a user can act on; checks that depend on a failed one are not
  reported, so an unreachable host yields exactly one failure line.
* ``remote``: reaching one host: resolve its name, ``ssh`` to it, run ``launch.probe`` there.
* ``run``: the whole preflight (``run_preflight``): every host in parallel, then the MPI
  allreduce smoke test, which runs only when every host passed (else it would only repeat
  their failures, slowly), through ``mpirun_command`` with the plan's placement: the same argv
  builder a launch uses.

The process helpers (``run_bounded``) are the launcher's, in ``launch.processes``; the good
hostfile is written by ``cluster.hosts.good_hostfile_text``, beside the parser that reads it.
"""
