"""``hvdtrain serve`` from a test: a subprocess in its own session, bound to 127.0.0.1 on free
ports, its output in a log file (a busy server writes an access-log line per request and must
never block on a pipe nobody reads), ready when ``/v2/health/ready`` says so, stopped (and
killed with its process group if it hangs) at the end.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.jobs import REPO, hvdtrain, job_env

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    grpc_port: int | None
    log: Path

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30
                ) -> tuple[int, Any]:
        """(status, the JSON body, or the raw bytes when it is not JSON)."""
        connection = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            answer = connection.getresponse()
            raw = answer.read()
        finally:
            connection.close()
        try:
            return answer.status, json.loads(raw)
        except ValueError:
            return answer.status, raw

    def signal(self, number: int = signal.SIGTERM) -> None:
        self.proc.send_signal(number)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            pytest.fail(f"hvdtrain serve did not exit within {timeout} s\n{self.output()[-3000:]}")

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait(timeout)


def start(args: list[str], log: Path, *, grpc: bool = False, ready_timeout: float = 300
          ) -> Server:
    port = free_port()
    grpc_port = free_port() if grpc else None
    argv = hvdtrain("serve", "--host", HOST, "--port", str(port), *args,
                    *(["--grpc-port", str(grpc_port)] if grpc_port else []))
    with log.open("wb") as handle:
        proc = subprocess.Popen(argv, cwd=REPO, env=job_env(), stdout=handle,
                                stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(proc, port, grpc_port, log)
    deadline = time.monotonic() + ready_timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"hvdtrain serve exited {proc.returncode} before it was ready\n"
                        f"{server.output()[-3000:]}")
        try:
            if server.request("GET", "/v2/health/ready", timeout=5)[0] == 200:
                return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"hvdtrain serve not ready within {ready_timeout} s\n"
                        f"{server.output()[-3000:]}")
        time.sleep(0.3)


def infer_body(rows: Any, name: str = "x", datatype: str = "FP32") -> str:
    """A V2 JSON infer request for ``rows`` (a numpy array)."""
    return json.dumps({"inputs": [{"name": name, "datatype": datatype,
                                   "shape": list(rows.shape),
                                   "data": rows.ravel().tolist()}]})
