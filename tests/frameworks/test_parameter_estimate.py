"""The launcher's checkpoint-size estimate counts the built-in models' parameters without a
framework (``train_launcher.diskspace``); each framework's own count must agree (one framework per
process: each runs in a subprocess)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hvdtrain.catalog import FRAMEWORKS
from hvdtrain.train_launcher.diskspace import parameter_count
from hvdtrain.training.datasets import load_dataset

REPO = Path(__file__).resolve().parents[2]
# a built-in model on a data set it reads
CASES = [("mlp", "breast-cancer"), ("mlp", "digits"), ("cnn", "digits"),
         ("transformer", "synthetic-text")]
COUNT = """
import json, sys
from hvdtrain.training.datasets import load_dataset
framework, cases = sys.argv[1], json.loads(sys.argv[2])
counts = []
for model, data_name in cases:
    data = load_dataset(data_name, 0, 0.2, "label")
    if framework == "torch":
        from hvdtrain.frameworks.torch.models import BUILDERS
        built = BUILDERS[model](data)
        counts.append(sum(p.numel() for p in built.parameters()))
    else:
        from hvdtrain.frameworks.tensorflow.models import BUILDERS
        built = BUILDERS[model](data)
        if not built.built:
            built.build((None, data.num_features))
        counts.append(int(built.count_params()))
print(json.dumps(counts))
"""


@pytest.mark.parametrize("framework", FRAMEWORKS.names())
def test_the_estimate_counts_what_the_framework_builds(framework: str) -> None:
    if importlib.util.find_spec(framework) is None:  # not imported here: one per process
        pytest.skip(f"{framework} is not installed")
    done = subprocess.run([sys.executable, "-c", COUNT, framework, json.dumps(CASES)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    expected = []
    for model, data_name in CASES:
        data = load_dataset(data_name, 0, 0.2, "label")
        expected.append(parameter_count(model, data.num_features, data.image_shape,
                                        data.num_outputs))
    assert counts == expected
