"""Before the start: every mistake is one line with its exit code and no traceback. At the end:
SIGTERM under client load answers every request the server accepted and exits 0; a request
still running at ``--drain-timeout`` is cut off and the exit code says so (124)."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from hvdtrain.commands import main
from hvdtrain.errors import ExitCode
from tests.helpers.jobs import REPO, hvdtrain, run_job
from tests.serving import servers
from tests.serving.servers import HOST, infer_body


def _one_line_error(argv: list[str], code: int, says: str) -> None:
    done = run_job(hvdtrain("serve", "--host", HOST, *argv), cwd=REPO, timeout=120)
    assert done.returncode == code, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("hvdtrain: error:")]
    assert len(errors) == 1 and says in errors[0], done.stderr[-2000:]


def test_neither_or_both_sources_is_an_error() -> None:
    _one_line_error([], ExitCode.CONFIG, "give one of --checkpoint and --model-dir")


def test_a_missing_checkpoint_is_an_error(tmp_path: Path) -> None:
    _one_line_error(["--checkpoint", str(tmp_path / "nope")], ExitCode.CHECKPOINT,
                    "no such file or run directory")


def test_an_unreadable_checkpoint_is_an_error(tmp_path: Path) -> None:
    broken = tmp_path / "epoch-0001.ckpt"
    broken.write_bytes(b"not a zip")
    _one_line_error(["--checkpoint", str(broken)], ExitCode.CHECKPOINT, "cannot read")


def test_a_missing_export_is_an_error(tmp_path: Path) -> None:
    _one_line_error(["--model-dir", str(tmp_path / "model.onnx")], ExitCode.CHECKPOINT,
                    "no such file or directory")


def test_an_export_without_its_sidecar_is_an_error(tf_model: dict[str, Any],
                                                   tmp_path: Path) -> None:
    shutil.copy(tf_model["export"], tmp_path / "model.keras")
    _one_line_error(["--model-dir", str(tmp_path / "model.keras")], ExitCode.CHECKPOINT,
                    "no sidecar model.keras.json")
    _one_line_error(["--model-dir", str(tmp_path)], ExitCode.CHECKPOINT,
                    "without the .json sidecar")


def test_a_sidecar_that_is_not_one_is_an_error(tf_model: dict[str, Any],
                                               tmp_path: Path) -> None:
    shutil.copy(tf_model["export"], tmp_path / "model.keras")
    (tmp_path / "model.keras.json").write_text("{not json")
    _one_line_error(["--model-dir", str(tmp_path)], ExitCode.CHECKPOINT, "not valid JSON")
    (tmp_path / "model.keras.json").write_text('{"format": "keras"}')
    _one_line_error(["--model-dir", str(tmp_path)], ExitCode.CHECKPOINT,
                    "not an hvdtrain export sidecar")


def test_an_empty_directory_and_a_torchscript_export_are_errors(tf_model: dict[str, Any],
                                                                tmp_path: Path) -> None:
    _one_line_error(["--model-dir", str(tmp_path)], ExitCode.CHECKPOINT, "no hvdtrain export")
    spec = json.loads(Path(str(tf_model["export"]) + ".json").read_text())
    (tmp_path / "model.pt").write_bytes(b"")
    (tmp_path / "model.pt.json").write_text(json.dumps({**spec, "format": "torchscript"}))
    _one_line_error(["--model-dir", str(tmp_path)], ExitCode.CONFIG, "torchscript export")


def test_a_port_in_use_is_an_error(torch_model: dict[str, Any]) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        _one_line_error(["--checkpoint", str(torch_model["run_dir"]), "--port", str(port)],
                        ExitCode.CONFIG, f"--port {port}: cannot listen on {HOST}")


def test_a_framework_that_is_not_installed_is_an_error(tf_model: dict[str, Any],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from hvdtrain.serving import loading

    monkeypatch.setitem(loading.RUN_NEEDS, "keras", ("tensorflow", "no_such_runtime_here"))
    result = CliRunner().invoke(main, ["serve", "--model-dir", str(tf_model["export"])])
    assert result.exit_code == ExitCode.CONFIG, result.output
    assert "needs no_such_runtime_here, which is not installed" in result.output
    assert "hint: pip install 'hvdtrain[serve]'" in result.output


@pytest.mark.parametrize(("args", "says"), [
    (["--max-batch-size", "0"], "--max-batch-size must be >= 1"),
    (["--workers", "0"], "--workers must be >= 1"),
    (["--drain-timeout", "-1"], "--drain-timeout must be between"),
    (["--port", "70000"], "--port must be a port number"),
    (["--name", "no/slashes"], "--name 'no/slashes'"),
])
def test_bad_options_are_errors(args: list[str], says: str, tmp_path: Path) -> None:
    _one_line_error(["--model-dir", str(tmp_path), *args], ExitCode.CONFIG, says)


class Load:
    """Client threads sending single-row requests on keep-alive connections until the server
    stops accepting; every answer is recorded."""

    def __init__(self, server: servers.Server, model: dict[str, Any], threads: int) -> None:
        self.server, self.model = server, model
        self.answers: list[tuple[float, int, Any, int]] = []  # (time, status, body, row)
        self.refused = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, seed: int) -> None:
        row = seed
        connection: http.client.HTTPConnection | None = None
        while not self.stop.is_set():
            row = (row + 7) % len(self.model["x"])
            try:
                if connection is None:
                    connection = http.client.HTTPConnection(HOST, self.server.port, timeout=60)
                connection.request("POST", f"/v2/models/{self.model['name']}/infer",
                                   infer_body(self.model["x"][row:row + 1]),
                                   {"Content-Type": "application/json"})
                answer = connection.getresponse()
                body = json.loads(answer.read())
                with self.lock:
                    self.answers.append((time.monotonic(), answer.status, body, row))
            except (ConnectionError, http.client.HTTPException, OSError):
                if connection is not None:
                    connection.close()
                connection = None
                with self.lock:
                    self.refused += 1
                if self.server.proc.poll() is not None:
                    return
                time.sleep(0.05)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


def test_sigterm_under_load_answers_every_accepted_request_and_exits_0(
        torch_model: dict[str, Any], tmp_path: Path) -> None:
    # a batch waits up to 300 ms for company: when SIGTERM comes, requests are in the queue
    server = servers.start(["--checkpoint", str(torch_model["run_dir"]),
                            "--max-batch-delay-ms", "300", "--drain-timeout", "20"],
                           tmp_path / "serve.log")
    with Load(server, torch_model, threads=12) as load:
        time.sleep(1.5)
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        code = server.wait(40)
        stopped = time.monotonic()
    log = server.output()
    assert code == 0, log[-3000:]
    assert stopped - signalled < 20
    assert "drained: every accepted request was answered" in log
    statuses = [status for _, status, _, _ in load.answers]
    assert statuses and set(statuses) == {200}, statuses
    after = [a for a in load.answers if a[0] > signalled]
    assert after, "no request was in flight when SIGTERM came"
    for _, _, body, row in load.answers:
        label = next(o for o in body["outputs"] if o["name"] == "label")["data"][0]
        assert label == torch_model["predictions"][row]["prediction"]
    # the server answered exactly what the clients received: nothing it accepted was dropped
    served = [line for line in log.splitlines() if "/infer HTTP/1.1" in line]
    assert len(served) == len(load.answers), (len(served), len(load.answers))
    assert all('" 200 ' in line for line in served)


def test_a_request_still_running_at_the_drain_timeout_is_cut_off(
        torch_model: dict[str, Any], tmp_path: Path) -> None:
    server = servers.start(["--checkpoint", str(torch_model["run_dir"]),
                            "--max-batch-delay-ms", "3000", "--drain-timeout", "0.5"],
                           tmp_path / "serve.log")
    outcome: list[Any] = []

    def one() -> None:
        try:
            outcome.append(server.request("POST", f"/v2/models/{torch_model['name']}/infer",
                                          infer_body(np.zeros((1, 30), np.float32)),
                                          {"Content-Type": "application/json"}))
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            outcome.append(exc)

    client = threading.Thread(target=one)
    client.start()
    time.sleep(0.5)
    server.signal(signal.SIGTERM)
    code = server.wait(30)
    client.join(30)
    assert code == ExitCode.TIMEOUT, server.output()[-3000:]
    assert "cut off" in server.output()
    assert outcome and not (isinstance(outcome[0], tuple) and outcome[0][0] == 200), outcome
