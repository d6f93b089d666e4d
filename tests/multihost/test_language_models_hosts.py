"""The job users bring, across two (namespace) hosts: fine-tune a pretrained language model
from a local directory on a CSV of labelled sentences with one command, then evaluate it.

Model, data and run directory are on the file system both hosts share (as a cluster's shared
home would be); the model is a tiny BERT saved with ``save_pretrained``, nothing downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.language_models import make_bert, write_reviews
from tests.helpers.jobs import PYTHON, read_summary, run_cli
from tests.helpers.namespace_lab import NamespaceHosts

pytestmark = pytest.mark.multihost
pytest.importorskip("transformers")


@pytest.mark.parametrize("launcher", ["mpirun", "horovodrun"])
def test_fine_tune_across_two_hosts(namespace_hosts: NamespaceHosts, tmp_path: Path,
                                    launcher: str) -> None:
    lab = namespace_hosts
    make_bert(tmp_path / "bert")
    write_reviews(tmp_path / "reviews.csv", n=600)
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("".join(f"{host} slots=1\n" for host in lab.hosts))
    run_dir = tmp_path / "run"
    done = run_cli([PYTHON, "-m", "hvdtrain", "train", "--hostfile", str(hostfile),
                    "--launcher", launcher, "--model", "hf:bert", "--data", "reviews.csv",
                    "--text-column", "review", "--label-column", "sentiment", "--lr", "3e-3",
                    "--epochs", "6", "--run-dir", "run", "--start-timeout", "120"],
                   cwd=tmp_path, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    summary = read_summary(run_dir)
    assert sorted(rank["host"] for rank in summary["ranks"]) == sorted(lab.hosts)
    assert summary["val_accuracy"] >= 0.9 and summary["parameters_identical"] is True
    done = run_cli([PYTHON, "-m", "hvdtrain", "evaluate", "--checkpoint", "run", "--data",
                    "reviews.csv", "--json", "-np", "1"], cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["class_names"] == ["negative", "positive"]
    assert result["accuracy"] == pytest.approx(summary["val_accuracy"], abs=1e-12)
