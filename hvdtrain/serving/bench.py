"""``hvdtrain bench serve``: what adaptive batching buys, measured on loopback against its own
baselines in the same run.

Two servers of the same model run side by side (``hvdtrain serve`` subprocesses on 127.0.0.1):
batching on (``--max-batch-size``, ``--max-batch-delay-ms``) and off (``--no-batching``: one
runtime call per request, through the same queue and executor). For each client count, closed-
loop clients (one keep-alive connection each, one single-row JSON request at a time, the
request bytes prepared up front so the client costs little) load one server, then the other;
the order alternates between rounds, and every measurement is bounded by a request count and
a time limit. Per configuration: the median throughput over the rounds, the paired on/off
ratio of each round (median, min–max), latency percentiles over every request of every round,
and the mean rows per runtime call (from the server's own ``/metrics``). The ceiling: the
runtime alone, in this process, at one row and at a full batch. A text model (BYTES inputs:
the byte-token transformer, a fine-tuned language model) gets one review-like sentence per
request (``SAMPLE_TEXT``); its ceiling includes the server's tokenizing, which ``run`` does.

Runs in the launching process (it starts the servers and is their client); the clients and
the servers share this machine's cores, so compare within one run, not across machines.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hvdtrain.errors import ConfigError, LaunchError
from hvdtrain.launch.processes import signal_group
from hvdtrain.serving.loading import default_name, load, locate

HOST = "127.0.0.1"
CONFIGS = ("on", "off")
LENGTH = re.compile(rb"content-length:\s*(\d+)", re.I)
# what a text model's clients send (one row each): about as long as a short review
SAMPLE_TEXT = ("the film was quite good and the music was really lovely, but the story "
               "dragged a little in the middle and the ending felt rushed")


@dataclass(frozen=True)
class ServeBenchConfig:
    checkpoint: str | None = None
    model_dir: str | None = None
    clients: tuple[int, ...] = (1, 16, 64)
    requests: int = 2000  # per measurement (one client count, one configuration, one round)
    max_seconds: float = 10.0  # per measurement
    rounds: int = 3
    max_batch_size: int = 64
    max_batch_delay_ms: float = 0.0
    workers: int = 1

    def check(self) -> None:
        if not self.clients or min(self.clients) < 1 or max(self.clients) > 1024:
            raise ConfigError(f"--clients: each between 1 and 1024, got {self.clients}")
        for flag, value in (("--requests", self.requests), ("--rounds", self.rounds),
                            ("--max-batch-size", self.max_batch_size),
                            ("--workers", self.workers)):
            if value < 1:
                raise ConfigError(f"{flag} must be >= 1, got {value}")
        if not 0 < self.max_seconds <= 600:
            raise ConfigError(f"--max-seconds must be in (0, 600], got {self.max_seconds:g}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class _Server:
    """``hvdtrain serve`` as a subprocess of its own session, its log in a file."""

    def __init__(self, source: list[str], extra: list[str], log: Path) -> None:
        self.port, self.log = _free_port(), log
        argv = [sys.executable, "-m", "hvdtrain", "serve", "--host", HOST, "--port",
                str(self.port), *source, *extra]
        with log.open("wb") as handle:
            self.proc = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://{HOST}:{self.port}{path}", timeout=10) as answer:
            return bytes(answer.read())

    def wait_ready(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LaunchError(f"the benchmark's server exited {self.proc.returncode} "
                                  f"before it was ready: {self._tail()}")
            try:
                self.get("/v2/health/ready")
                return
            except OSError:
                time.sleep(0.2)
        raise LaunchError(f"the benchmark's server was not ready in {timeout:g} s: "
                          f"{self._tail()}")

    def batches(self) -> tuple[float, float]:
        """(runtime calls, requests in them) so far, from the server's /metrics."""
        text = self.get("/metrics").decode()
        found = {}
        for name in ("hvdtrain_serve_batch_requests_count", "hvdtrain_serve_batch_requests_sum"):
            match = re.search(rf"^{name} (\S+)$", text, re.M)
            found[name] = float(match.group(1)) if match else 0.0
        return (found["hvdtrain_serve_batch_requests_count"],
                found["hvdtrain_serve_batch_requests_sum"])

    def cpu_seconds(self) -> float | None:
        """CPU time the server has used (user + system, every thread), from /proc: a cost per
        request that a busy machine distorts far less than throughput."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            signal_group(self.proc.pid, 15)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                signal_group(self.proc.pid, 9)
                self.proc.wait()
        return self.proc.returncode

    def _tail(self) -> str:
        lines = self.log.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:])


async def _load(port: int, request: bytes, clients: int, requests: int,
                max_seconds: float) -> dict[str, Any]:
    """Closed-loop clients until ``requests`` answers or ``max_seconds``."""
    latencies: list[float] = []
    failures = [0]
    left = [requests]
    deadline = time.perf_counter() + max_seconds

    async def client() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while left[0] > 0 and time.perf_counter() < deadline:
                left[0] -= 1
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = LENGTH.search(head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                latencies.append(time.perf_counter() - started)
                if head[9:12] != b"200":
                    failures[0] += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    seconds = time.perf_counter() - started
    return {"requests": len(latencies), "seconds": seconds, "failures": failures[0],
            "latencies": latencies}


def _one_row(servable: Any) -> dict[str, np.ndarray]:
    """The request every client sends: the warm-up's row for features, a review-like
    sentence (``SAMPLE_TEXT``) in every BYTES input of a text model."""
    tensors: dict[str, np.ndarray] = servable.probe()
    return {k: np.array([SAMPLE_TEXT.encode()], dtype=object) if v.dtype == object else v
            for k, v in tensors.items()}


def _request(name: str, tensors: dict[str, np.ndarray], datatypes: dict[str, str]) -> bytes:
    inputs = [{"name": k, "datatype": datatypes[k], "shape": list(v.shape),
               "data": [t.decode() for t in v.ravel()] if v.dtype == object
               else v.ravel().tolist()} for k, v in tensors.items()]
    body = json.dumps({"inputs": inputs}).encode()
    return (f"POST /v2/models/{name}/infer HTTP/1.1\r\nHost: {HOST}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


def _ceiling(run: Any, rows: np.ndarray, seconds: float = 1.0) -> float:
    """Rows per second of the runtime alone on ``rows``."""
    run(rows)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        run(rows)
        count += 1
    return count * len(rows) / (time.perf_counter() - started)


def run(config: ServeBenchConfig) -> dict[str, Any]:
    config.check()
    source = locate(config.checkpoint, config.model_dir)
    servable = load(source, config.workers)  # also makes the export the servers will reuse
    name = default_name(source.card)
    tensors = _one_row(servable)
    one = servable.prepare(tensors)
    full = np.repeat(one, config.max_batch_size, axis=0)
    ceiling = {"1": _ceiling(servable.run, one),
               str(config.max_batch_size): _ceiling(servable.run, full)}
    request = _request(name, tensors, {s.name: s.datatype for s in servable.inputs})
    where = (["--checkpoint", config.checkpoint] if config.checkpoint
             else ["--model-dir", str(config.model_dir)])
    common = ["--max-batch-size", str(config.max_batch_size), "--workers", str(config.workers)]
    extra = {"on": [*common, "--max-batch-delay-ms", f"{config.max_batch_delay_ms:g}"],
             "off": [*common, "--no-batching"]}
    samples: dict[tuple[int, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="hvdtrain-bench-serve-") as tmp:
        servers = {c: _Server(where, extra[c], Path(tmp) / f"serve-{c}.log") for c in CONFIGS}
        try:
            for server in servers.values():
                server.wait_ready()
            for c in CONFIGS:  # warm-up: connections, code paths, the runtime
                asyncio.run(_load(servers[c].port, request, 4, 200, 10))
            for round_ in range(config.rounds):
                for clients in config.clients:
                    order = CONFIGS if (round_ + clients) % 2 == 0 else CONFIGS[::-1]
                    for c in order:
                        calls, cpu = servers[c].batches(), servers[c].cpu_seconds()
                        got = asyncio.run(_load(servers[c].port, request, clients,
                                                config.requests, config.max_seconds))
                        after, cpu_after = servers[c].batches(), servers[c].cpu_seconds()
                        got["cpu_seconds"] = (cpu_after - cpu if cpu is not None
                                              and cpu_after is not None else None)
                        got["calls"] = after[0] - calls[0]
                        got["batched_requests"] = after[1] - calls[1]
                        samples.setdefault((clients, c), []).append(got)
        finally:
            codes = {c: s.stop() for c, s in servers.items()}
    result = _summarise(config, name, servable.runtime, ceiling, samples, codes)
    result["text"] = any(s.datatype == "BYTES" for s in servable.inputs)
    return result


def _summarise(config: ServeBenchConfig, name: str, runtime: str, ceiling: dict[str, float],
               samples: dict[tuple[int, str], list[dict[str, Any]]],
               codes: dict[str, int | None]) -> dict[str, Any]:
    rows = []
    for clients in config.clients:
        on, off = samples[(clients, "on")], samples[(clients, "off")]
        ratios = [a["requests"] / a["seconds"] / (b["requests"] / b["seconds"])
                  for a, b in zip(on, off, strict=True)]
        for c, runs in (("on", on), ("off", off)):
            latencies = np.array([x for r in runs for x in r["latencies"]]) * 1e3
            calls = sum(r["calls"] for r in runs)
            cpu = [r["cpu_seconds"] for r in runs]
            rows.append({
                "clients": clients, "batching": c,
                "requests_per_second": statistics.median(r["requests"] / r["seconds"]
                                                         for r in runs),
                "p50_ms": float(np.percentile(latencies, 50)),
                "p99_ms": float(np.percentile(latencies, 99)),
                "requests": int(sum(r["requests"] for r in runs)),
                "failures": int(sum(r["failures"] for r in runs)),
                "rows_per_call": (sum(r["batched_requests"] for r in runs) / calls
                                  if calls else 0.0),
                "server_cpu_ms_per_request": (1e3 * sum(cpu) / sum(r["requests"] for r in runs)
                                              if None not in cpu else None),
                "vs_off": {"median": statistics.median(ratios), "min": min(ratios),
                           "max": max(ratios)} if c == "on" else None})
    return {"model": name, "runtime": runtime, "config": config.__dict__ | {
        "clients": list(config.clients)}, "ceiling_rows_per_second": ceiling,
        "rows": rows, "server_exit_codes": codes}


def render(result: dict[str, Any]) -> str:
    config = result["config"]
    head = (f"hvdtrain serve on {HOST}: {result['model']} ({result['runtime']}), single-row "
            f"JSON requests, closed-loop clients; batching on = --max-batch-size "
            f"{config['max_batch_size']} --max-batch-delay-ms {config['max_batch_delay_ms']:g}, "
            f"off = --no-batching; {config['workers']} worker(s); req/s: median of "
            f"{config['rounds']} interleaved rounds (at most {config['requests']} requests or "
            f"{config['max_seconds']:g} s each); latency over all their requests; vs off: "
            "median (min-max) of the rounds' paired ratios; server CPU: the server process's "
            "user + system time per request")
    lines = [("clients", "batching", "req/s", "p50 ms", "p99 ms", "rows/call", "req/s vs off",
              "server CPU ms/req", "failed")]
    for row in result["rows"]:
        ratio = row["vs_off"]
        lines.append((str(row["clients"]), row["batching"],
                      f"{row['requests_per_second']:,.0f}", f"{row['p50_ms']:.2f}",
                      f"{row['p99_ms']:.2f}", f"{row['rows_per_call']:.1f}",
                      f"{ratio['median']:.2f} ({ratio['min']:.2f}-{ratio['max']:.2f})"
                      if ratio else "",
                      "n/a" if row["server_cpu_ms_per_request"] is None
                      else f"{row['server_cpu_ms_per_request']:.2f}", str(row["failures"])))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    table = "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True))
                      .rstrip() for line in lines)
    ceiling = ", ".join(f"{int(k)} row(s) per call: {v:,.0f} rows/s"
                        for k, v in result["ceiling_rows_per_second"].items())
    text = " (with the server's tokenizing)" if result.get("text") else ""
    return f"{head}\n{table}\nruntime alone{text}, in process: {ceiling}"
