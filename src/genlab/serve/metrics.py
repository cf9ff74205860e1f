"""Prometheus metrics for the server (`GET /metrics`), on a registry of the app's own:
requests by route and status, latency histograms, batch sizes and queue depth."""

from __future__ import annotations

import time
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.routing import Match

ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("genlab_requests", "HTTP requests by route template, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("genlab_request_seconds", "Request latency (to the last byte, streams included)",
                                 ["route"], registry=r,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.batch_rows = Histogram("genlab_batch_rows", "Rows (images or sequences) per forward batch",
                                    ["model", "kind"], registry=r, buckets=ROWS_BUCKETS)
        self.batch_requests = Histogram("genlab_batch_requests", "Requests merged into one forward batch",
                                        ["model", "kind"], registry=r, buckets=ROWS_BUCKETS)
        self.queue_depth = Gauge("genlab_queue_depth", "Requests waiting for a batch", ["model"], registry=r)
        self.loaded = Gauge("genlab_models_loaded", "Models loaded and ready", registry=r)

    def observe_batch(self, model: str, kind: str, jobs: list) -> None:
        self.batch_rows.labels(model, kind).observe(sum(j.rows for j in jobs))
        self.batch_requests.labels(model, kind).observe(len(jobs))

    def watch_queue(self, model: str, depth: Callable[[], int]) -> None:
        self.queue_depth.labels(model).set_function(depth)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def route_template(app, scope) -> str:
    """The matched route's path template ("/v1/models/{name}/images"), so labels stay few."""
    for route in app.routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return route.path
    return "unmatched"


class MetricsMiddleware:
    """Pure ASGI (streams pass straight through): counts each response and times it to its last byte."""

    def __init__(self, app, metrics: Metrics, router_app):
        self.app, self.metrics, self.router_app = app, metrics, router_app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route, start, status = route_template(self.router_app, scope), time.perf_counter(), [500]

        async def send_wrapped(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapped)
        finally:
            self.metrics.requests.labels(route, scope["method"], str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
