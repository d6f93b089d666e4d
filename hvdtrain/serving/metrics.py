"""The server's own Prometheus metrics, beside KServe's, on the same ``/metrics``.

KServe records its preprocess/predict/postprocess times per model; these add what operating a
server needs: requests by protocol, endpoint and status, their latency, the rows and requests
in each runtime call and its time, and what waits in the batcher's queue right now. Labels are
a fixed set (the endpoint kind, never the path), so a client cannot grow them. Created once
per process, in prometheus_client's default registry (the one KServe's ``/metrics`` reads).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self) -> None:
        self.requests = Counter("hvdtrain_serve_requests", "Requests answered, by protocol, "
                                "endpoint and status", ("protocol", "endpoint", "status"))
        self.latency = Histogram("hvdtrain_serve_request_seconds", "Time from a request's "
                                 "arrival to its answer", ("protocol", "endpoint"),
                                 buckets=LATENCY_BUCKETS)
        self.inflight = Gauge("hvdtrain_serve_inflight_requests", "Requests being answered")
        self.batch_rows = Histogram("hvdtrain_serve_batch_rows", "Rows in one runtime call",
                                    buckets=ROW_BUCKETS)
        self.batch_requests = Histogram("hvdtrain_serve_batch_requests",
                                        "Requests in one runtime call", buckets=ROW_BUCKETS)
        self.batch_seconds = Histogram("hvdtrain_serve_batch_seconds", "Time of one runtime "
                                       "call", buckets=LATENCY_BUCKETS)
        self.queue_rows = Gauge("hvdtrain_serve_queue_rows", "Rows waiting for the runtime")
        self.queue_requests = Gauge("hvdtrain_serve_queue_requests",
                                    "Requests waiting for the runtime")
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def observe(self, protocol: str, endpoint: str, status: str, seconds: float) -> None:
        key = (protocol, endpoint, status)
        found = self._children.get(key)
        if found is None:  # a label set's children, looked up once (labels() costs ~2 µs)
            found = self._children[key] = (self.requests.labels(*key),
                                           self.latency.labels(protocol, endpoint))
        found[0].inc()
        found[1].observe(seconds)

    def batch(self, rows: int, requests: int, seconds: float) -> None:
        self.batch_rows.observe(rows)
        self.batch_requests.observe(requests)
        self.batch_seconds.observe(seconds)

    def watch_queue(self, rows: Callable[[], float], requests: Callable[[], float]) -> None:
        self.queue_rows.set_function(rows)
        self.queue_requests.set_function(requests)


@cache
def metrics() -> Metrics:
    """This process's metrics (registered once)."""
    return Metrics()
