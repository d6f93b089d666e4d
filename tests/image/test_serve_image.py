"""The serving image, ``docker/Dockerfile.serve``, built with podman and run as a user runs it:
``podman run IMAGE`` with no arguments serves the example model the image bundles
(docker/serve-example/, made by scripts/serve_example.sh), becomes ready, answers a V2
inference request as ``hvdtrain predict`` answered for the same rows, runs as uid 1000 with no
training stack inside, and drains and exits 0 on ``podman stop``.

The container runs with ``--network none``; every request is the host's ``curl`` inside the
container's network namespace (``nsenter -n``), to its loopback: no traffic leaves it. The
build reuses the layer cache (cold only when the pinned packages or the base changed;
HVDTRAIN_SERVE_TEST_COLD=1 times a build without it); time to ready and the size are printed
at the end of the session (docs/CONTAINERS.md).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.image_lab import (
    PODMAN_TIMEOUT_S,
    TEST_TIMEOUT_S,
    USER_ID,
    BuiltImage,
    Containers,
    build_or_reuse,
    ensure_base,
    ensure_tools,
    note,
    podman,
    skip_reason,
)
from tests.helpers.jobs import REPO

pytestmark = pytest.mark.timeout(TEST_TIMEOUT_S)  # the first test waits for the build

SERVE_IMAGE = os.environ.get("HVDTRAIN_TEST_SERVE_IMAGE", "localhost/hvdtrain-serve:test")
SERVE_COLD = os.environ.get("HVDTRAIN_SERVE_TEST_COLD", "0") == "1"
DOCKERFILE = "docker/Dockerfile.serve"
EXAMPLE = REPO / "docker" / "serve-example"
MODEL = "mlp-breast-cancer"  # the bundled example's default name (MODEL-DATA)
PORT = 8080  # the image's default command
MAX_SIZE_BYTES = 1_000_000_000  # about 0.7 GB measured; far above, the training stack came in
READY_TIMEOUT_S = 180  # podman run until ready, on a busy 2-core machine
DRAIN_TIMEOUT_S = 30  # hvdtrain serve's default --drain-timeout
STOP_GRACE_S = 60  # podman stop -t: past the drain timeout, so a SIGKILL would show as 137
CURL_TIMEOUT_S = 30
TOLERANCE = 1e-5  # probabilities: ONNX Runtime against torch (docs/SERVING.md)

# What the image must not hold (the training stack) and must (the server and its runtime).
ABSENT_MODULES = ("horovod", "mpi4py", "torch", "tensorflow", "keras", "sklearn", "onnx",
                  "onnxscript", "tensorboard", "tensorboardX", "matplotlib", "transformers",
                  "keras_hub")
PRESENT_MODULES = ("hvdtrain", "kserve", "onnxruntime", "prometheus_client")
ABSENT_PROGRAMS = ("mpirun", "mpiexec", "orterun", "horovodrun", "gcc", "cc", "g++", "make",
                   "cmake")
# Inside the running container: the uid of every process, and which of the modules and programs
# named in argv[1] (JSON) are importable or on PATH.
INSIDE = """
import glob, importlib.util, json, os, shutil, sys
ask = json.loads(sys.argv[1])
uids = {}
for pid in (p for p in os.listdir("/proc") if p.isdigit()):
    try:
        line = next(l for l in open(f"/proc/{pid}/status") if l.startswith("Uid:"))
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode().strip()
    except (OSError, StopIteration):
        continue
    uids[f"{pid} {cmd}"] = sorted(set(int(u) for u in line.split()[1:]))
print(json.dumps({
    "uids": uids,
    "modules": {m: importlib.util.find_spec(m) is not None for m in ask["modules"]},
    "programs": {p: shutil.which(p) for p in ask["programs"]},
    "libmpi": glob.glob("/usr/lib/*/libmpi*") + glob.glob("/usr/lib/*/openmpi"),
}))
"""


@pytest.fixture(scope="module")
def serve_image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    """``docker/Dockerfile.serve`` built once per module, on the session's local base."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    missing = [tool for tool in ("curl", "nsenter") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {' '.join(missing)} on this machine")
    ensure_tools()
    work = tmp_path_factory.mktemp("serve-image-build")
    ensure_base(work)
    return build_or_reuse(work, DOCKERFILE, SERVE_IMAGE, cold=SERVE_COLD)


@dataclass(frozen=True)
class Served:
    """The image's default run: the container's name and its PID 1 on this machine."""

    name: str
    pid: int
    ready_s: float

    def curl(self, path: str, *args: str) -> tuple[int, str]:
        """``curl`` of ``path`` on the container's loopback: the status and the body."""
        argv = ["nsenter", "-t", str(self.pid), "-n", "curl", "-sS", "--max-time",
                str(CURL_TIMEOUT_S), "-w", "\n%{http_code}", *args,
                f"http://127.0.0.1:{PORT}{path}"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=CURL_TIMEOUT_S + 10,
                              stdin=subprocess.DEVNULL, check=False)
        body, _, status = done.stdout.rpartition("\n")
        assert done.returncode == 0, f"curl {path} exited {done.returncode}: {done.stderr}"
        return int(status), body

    def json(self, path: str, *args: str) -> Any:
        status, body = self.curl(path, *args)
        assert status == 200, f"{path}: {status} {body}"
        return json.loads(body)

    def logs(self) -> str:
        done = podman("logs", self.name)
        return done.stdout + done.stderr


def _ready_status(pid: int) -> str:
    """The readiness probe once, as a kubelet would: the HTTP status, or 000 (no answer)."""
    done = subprocess.run(["nsenter", "-t", str(pid), "-n", "curl", "-s", "-o", "/dev/null",
                           "-w", "%{http_code}", "--max-time", "2",
                           f"http://127.0.0.1:{PORT}/v2/health/ready"],
                          capture_output=True, text=True, timeout=30, check=False)
    return done.stdout.strip() or "000"


@pytest.fixture(scope="module")
def served(serve_image: BuiltImage, containers: Containers) -> Iterator[Served]:
    """``podman run -d IMAGE`` (default command), polled until ready every 0.1 s."""
    name = containers.name("serve")
    started = time.monotonic()
    done = containers.run("serve", "-d", "--network", "none", serve_image.name,
                          timeout=PODMAN_TIMEOUT_S)
    assert done.returncode == 0, f"podman run {serve_image.name} failed: {done.stderr}"
    pid = int(podman("inspect", "-f", "{{.State.Pid}}", name).stdout.strip() or 0)
    assert pid > 0, f"{name} has no process: {podman('logs', name).stderr[-3000:]}"
    polls = 0
    while _ready_status(pid) != "200":
        polls += 1
        if polls % 20 == 0:  # every 2 s or so: still running?
            state = podman("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", name)
            logs = podman("logs", name)
            assert state.stdout.startswith("running"), (
                f"the container ended before it was ready ({state.stdout.strip()}):\n"
                f"{(logs.stdout + logs.stderr)[-3000:]}")
            assert time.monotonic() - started < READY_TIMEOUT_S, (
                f"not ready after {READY_TIMEOUT_S} s:\n{(logs.stdout + logs.stderr)[-3000:]}")
        time.sleep(0.1)
    ready_s = time.monotonic() - started
    note(f"serve image: podman run to ready (GET /v2/health/ready 200): {ready_s:.1f} s")
    yield Served(name, pid, ready_s)
    podman("rm", "-f", "-t", "0", name)


def test_the_serve_image_builds_at_its_size(serve_image: BuiltImage) -> None:
    assert 0 < serve_image.size_bytes < MAX_SIZE_BYTES, (
        f"{serve_image.name} is {serve_image.size_bytes / 1e9:.2f} GB: a training package or "
        f"build tools in it?")
    labels = serve_image.labels()
    assert labels.get("io.hvdtrain.example-model") == MODEL, labels


def test_the_default_run_serves_the_bundled_example(served: Served) -> None:
    assert served.ready_s < READY_TIMEOUT_S
    assert served.json("/v2/health/live") == {"live": True}
    assert served.json("/v2/health/ready") == {"ready": True}
    assert served.json(f"/v2/models/{MODEL}/ready")["ready"] is True
    sidecar = json.loads((EXAMPLE / f"{MODEL}.onnx.json").read_text())
    metadata = served.json(f"/v2/models/{MODEL}")
    assert metadata["name"] == MODEL
    assert metadata["versions"] == [str(sidecar["trained"]["epoch"])]
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 30]}]
    assert {o["name"] for o in metadata["outputs"]} == {"class", "label", "probabilities"}


def _breast_cancer_rows() -> np.ndarray:
    """The raw rows ``hvdtrain predict --data breast-cancer --split all`` read, in order."""
    from sklearn.datasets import load_breast_cancer

    return np.asarray(load_breast_cancer().data, dtype=np.float32)


@pytest.mark.parametrize("rows", [slice(0, 64), slice(568, 569)], ids=["64-rows", "1-row"])
def test_inference_answers_as_hvdtrain_predict(served: Served, rows: slice,
                                               tmp_path: Path) -> None:
    """docker/serve-example/*.predictions.csv is ``hvdtrain predict``'s output for every row,
    written with the export (scripts/serve_example.sh); 64 rows is --max-batch-size."""
    pytest.importorskip("sklearn")
    with (EXAMPLE / f"{MODEL}.predictions.csv").open(newline="") as handle:
        expected = list(csv.DictReader(handle))[rows]
    x = _breast_cancer_rows()[rows]
    assert len(expected) == len(x) > 0
    body = tmp_path / "request.json"
    body.write_text(json.dumps({"inputs": [{"name": "x", "datatype": "FP32",
                                            "shape": list(x.shape),
                                            "data": x.ravel().tolist()}]}))
    answer = served.json(f"/v2/models/{MODEL}/infer", "-H", "Content-Type: application/json",
                         "--data-binary", f"@{body}")
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["label"]["data"] == [row["prediction"] for row in expected]
    probabilities = np.asarray(outputs["probabilities"]["data"]).reshape(len(x), -1)
    columns = [name for name in expected[0] if name.startswith("prob_")]
    predicted = np.array([[float(row[c]) for c in columns] for row in expected])
    assert np.abs(probabilities - predicted).max() <= TOLERANCE
    assert outputs["class"]["data"] == probabilities.argmax(axis=1).tolist()


def test_it_runs_as_non_root_without_the_training_stack(served: Served,
                                                         serve_image: BuiltImage) -> None:
    assert serve_image.inspect("{{.Config.User}}") == f"{USER_ID}:{USER_ID}"
    ask = {"modules": [*ABSENT_MODULES, *PRESENT_MODULES], "programs": list(ABSENT_PROGRAMS)}
    done = podman("exec", served.name, "python", "-c", INSIDE, json.dumps(ask))
    assert done.returncode == 0, f"podman exec python exited {done.returncode}: {done.stderr}"
    inside = json.loads(done.stdout)
    assert any("hvdtrain serve" in process for process in inside["uids"]), inside["uids"]
    root = {process: uids for process, uids in inside["uids"].items() if uids != [USER_ID]}
    assert root == {}, f"processes not running as uid {USER_ID} only: {root}"
    modules = inside["modules"]
    assert all(modules[m] for m in PRESENT_MODULES), modules
    assert [m for m in ABSENT_MODULES if modules[m]] == []
    assert {p: path for p, path in inside["programs"].items() if path} == {}
    assert inside["libmpi"] == []


def test_podman_stop_drains_and_exits_0(served: Served) -> None:
    """SIGTERM to PID 1 (tini), passed on to ``hvdtrain serve``: it drains, exits 0 by itself
    well inside its drain timeout (not 143 from the signal, nor 137 from a SIGKILL)."""
    started = time.monotonic()
    done = podman("stop", "-t", str(STOP_GRACE_S), served.name, timeout=STOP_GRACE_S + 60)
    stopped_s = time.monotonic() - started
    assert done.returncode == 0, f"podman stop failed: {done.stderr}"
    code = podman("inspect", "-f", "{{.State.ExitCode}}", served.name).stdout.strip()
    logs = served.logs()
    assert code == "0", f"exit code {code} after podman stop:\n{logs[-3000:]}"
    assert stopped_s < DRAIN_TIMEOUT_S, f"podman stop took {stopped_s:.1f} s"
    assert "drained: every accepted request was answered" in logs, logs[-3000:]
    note(f"serve image: podman stop (SIGTERM) to exit 0: {stopped_s:.1f} s")
