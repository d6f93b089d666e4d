"""`hvdtrain env`: what Horovod was built with, versions matching, no framework imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("horovod")


def test_env_json_reports_a_complete_matching_build() -> None:
    code = (
        "import json, sys\nfrom click.testing import CliRunner\n"
        "from hvdtrain.commands import main\n"
        "result = CliRunner().invoke(main, ['env', '--json'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'tensorflow', 'keras', 'horovod'))\n"
        "print(json.dumps({'exit': result.exit_code, 'report': json.loads(result.output),"
        " 'heavy': heavy}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    report = out["report"]
    assert out["heavy"] == []  # versions from metadata; the build probe ran in a subprocess
    assert out["exit"] == 0 and report["problems"] == []
    build = report["horovod_build"]
    assert build["frameworks"] == {"torch": True, "tensorflow": True}
    assert build["controllers"] == {"mpi": True, "gloo": True}
    assert report["framework_versions_match"] == {"pytorch": True, "tensorflow": True}
    assert report["bf16_sum_edits"] is True  # our build: Horovod sums bf16 (MPI)
    assert report["versions"]["horovod"] == "0.28.1"
    assert report["mpi"].startswith("mpirun (Open MPI)")
