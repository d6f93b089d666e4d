"""A user's own elastic script across real (namespace) hosts: ``hvdtrain launch --elastic``
starts it on hvdh1 alone, grows onto hvdh2 when the hostfile gains it, and goes on with hvdh1
when the worker on hvdh2 is killed.

Starting on one remote host is the case plain horovodrun cannot start without a
``--network-interface`` (it waits for two hosts to compare interfaces); hvdtrain gives it the
launcher's interface towards the hosts, and each host's wrapper its own.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers.jobs import PYTHON, REPO, hvdtrain, lab_env, spawn
from tests.helpers.namespace_lab import NamespaceHosts
from tests.helpers.user_elastic import ENV, SCRIPT, assert_grew_then_shrank, grow_then_lose_a_host

pytestmark = pytest.mark.multihost
pytest.importorskip("horovod.torch")


def test_a_users_elastic_script_grows_onto_and_survives_another_host(
        namespace_hosts: NamespaceHosts, tmp_path: Path) -> None:
    first, second = namespace_hosts.hosts[:2]
    hostfile, run_dir, out = tmp_path / "hosts", tmp_path / "run", tmp_path / "out"
    hostfile.write_text(f"{first} slots=1\n")
    out.mkdir()
    proc = spawn(hvdtrain("launch", "--elastic", "--min-np", "1", "--max-np", "2",
                          "--hostfile", str(hostfile), "--run-dir", str(run_dir),
                          "--elastic-timeout", "30", "--no-preflight", "--",
                          PYTHON, str(SCRIPT), "torch", str(out)),
                 lab_env(**ENV), REPO, stdin=subprocess.DEVNULL)
    done = grow_then_lose_a_host(proc, hostfile, second, run_dir, out)
    assert_grew_then_shrank(done, out, first)
