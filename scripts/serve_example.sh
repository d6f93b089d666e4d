#!/usr/bin/env bash
# Makes the example model docker/Dockerfile.serve bundles (docker/serve-example/), so that the
# serving image answers out of the box: torch's MLP trained on breast-cancer (10 epochs, 1 rank,
# seed 42), exported to ONNX with its sidecar, and `hvdtrain predict`'s answers for every row,
# which tests/image/test_serve_image.py compares with what the image serves.
#
#   scripts/serve_example.sh            # from the repository root, with .venv installed
#
# Rerun it when the export format or its sidecar changes (the image test then fails).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
hvdtrain=${HVDTRAIN:-$repo/.venv/bin/hvdtrain}
out=$repo/docker/serve-example
name=mlp-breast-cancer
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Relative paths inside $work: the sidecar records the checkpoint as given.
cd "$work"
"$hvdtrain" train -q -np 1 --framework torch --model mlp --data breast-cancer --epochs 10 \
    --seed 42 --run-dir run
mkdir export
"$hvdtrain" export -q --checkpoint run --format onnx --output "export/$name.onnx"
"$hvdtrain" predict -q --checkpoint run --data breast-cancer --split all -np 1 \
    --output predictions.csv

mkdir -p "$out"
cp "export/$name.onnx" "export/$name.onnx.json" "$out/"
cp predictions.csv "$out/$name.predictions.csv"
echo "wrote $out: $(cd "$out" && echo *)"
