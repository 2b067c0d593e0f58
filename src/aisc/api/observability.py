"""Observability at the edge: a request id and an access log line for every request, HTTP
metrics, and `GET /metrics` in Prometheus' text format with the centre's figures read fresh from
the database at each scrape."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterator
from typing import Annotated

import fastapi.routing
from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aisc import __version__
from aisc.api import problems
from aisc.api.deps import bearer
from aisc.domain.errors import AuthenticationFailed
from aisc.logs import request_id
from aisc.runtime import Runtime
from aisc.services import metrics

REQUEST_ID_HEADER = "X-Request-ID"
# a caller's id is kept only if it is short and cannot inject anything into a log line
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
UNMATCHED = "unmatched"  # paths that matched no route share one label: no label per typo
# any other method a client makes up is counted as "other": labels stay few
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

access_log = logging.getLogger("aisc.access")


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "aisc_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "aisc_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            registry=registry,
        )


class RouteTemplates:
    """The matched route's full template (`/api/v1/jobs/{job_id}`), never the raw path. FastAPI
    keeps included routers as a tree, so a matched route's own `path` lacks the prefixes it was
    included under; `iter_route_contexts` (where FastAPI has it) gives each route's full one."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._full: dict[int, str] | None = None  # id of a route object -> its full template

    def of(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            return UNMATCHED
        if self._full is None:  # on the first request: every route has been added by then
            self._full = self._expand()
        path = self._full.get(id(route)) or getattr(route, "path", None)
        return path if isinstance(path, str) and path else UNMATCHED

    def _expand(self) -> dict[int, str]:
        expand = getattr(fastapi.routing, "iter_route_contexts", None)
        if expand is None:  # an older FastAPI copies included routes with their full paths
            return {}
        return {
            id(context.original_route): context.path_format
            for context in expand(self.app.routes)
            if context.path_format
        }


def incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if VALID_REQUEST_ID.fullmatch(text) else None
    return None


class RequestContextMiddleware:
    """Gives each request an id (the caller's X-Request-ID when valid, else a new one) that
    every log record of the request carries and the response echoes; logs one access line and
    counts the request. Plain ASGI, so streamed responses pass straight through."""

    def __init__(self, app: ASGIApp, http: HttpMetrics, routes: RouteTemplates) -> None:
        self.app = app
        self.http = http
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = incoming_request_id(scope) or uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500  # unless a response starts: an unhandled error is answered further out

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._record(scope, status, time.perf_counter() - started)
        # only after a normal answer: on an error the id stays set for the outer error handler's
        # log line, and the request's task ends with it
        request_id.reset(token)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        method, route = str(scope.get("method", "")), self.routes.of(scope)
        label = method if method in METHODS else "other"
        self.http.requests.labels(label, route, str(status)).inc()
        self.http.duration.labels(label, route).observe(seconds)
        path = str(scope.get("path", ""))
        access_log.info(
            "%s %s %s",
            method,
            path,
            status,
            extra={
                "method": method,
                "path": path,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
            },
        )


class CentreCollector(Collector):
    """The centre's figures, read from the database at each scrape."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        runtime = self.runtime
        figures = metrics.centre_figures(runtime.uow)
        yield InfoMetricFamily(
            "aisc",
            "This aisc server.",
            value={
                "version": __version__,
                "backend": runtime.backend_name,
                "database": runtime.engine.dialect.name,
            },
        )
        yield GaugeMetricFamily(
            "aisc_backend_up",
            "1 while the executor backend answers, 0 while it is degraded.",
            value=1 if runtime.backend_status == "ok" else 0,
        )
        yield from _job_families(figures)
        yield from _fund_families(figures)
        yield from _allocation_families(figures)


def _job_families(figures: metrics.CentreFigures) -> Iterator[Metric]:
    depth = GaugeMetricFamily(
        "aisc_queue_depth", "Jobs queued, waiting to start, by GPU model.", labels=["gpu_model"]
    )
    queued_gpus = GaugeMetricFamily(
        "aisc_queue_gpus", "GPUs asked for by the queued jobs, by GPU model.", labels=["gpu_model"]
    )
    for model, queued in sorted(figures.queued.items()):
        depth.add_metric([model], queued.jobs)
        queued_gpus.add_metric([model], queued.gpus)
    yield depth
    yield queued_gpus
    jobs = GaugeMetricFamily("aisc_jobs", "Jobs in each state now.", labels=["state"])
    for state, count in figures.jobs_by_state.items():
        jobs.add_metric([state], count)
    yield jobs
    total = GaugeMetricFamily("aisc_gpus", "GPUs in the inventory, by model.", labels=["gpu_model"])
    busy = GaugeMetricFamily(
        "aisc_gpus_busy", "GPUs held by starting or running jobs, by model.", labels=["gpu_model"]
    )
    for model, gpus in sorted(figures.gpus_total.items()):
        total.add_metric([model], gpus)
        busy.add_metric([model], figures.gpus_busy.get(model, 0))
    yield total
    yield busy
    yield CounterMetricFamily(
        "aisc_jobs_started",
        "Job starts since the centre opened (a preempted job's every run counts).",
        value=figures.jobs_started,
    )
    finished = CounterMetricFamily(
        "aisc_jobs_finished", "Jobs that ended, by final state.", labels=["state"]
    )
    for state, count in figures.jobs_finished.items():
        finished.add_metric([state], count)
    yield finished


def _fund_families(figures: metrics.CentreFigures) -> Iterator[Metric]:
    labels = ["scheme_id", "scheme"]
    families = {
        "total": GaugeMetricFamily(
            "aisc_fund_total_cents", "A scheme's fund, in HKD cents.", labels=labels
        ),
        "available": GaugeMetricFamily(
            "aisc_fund_available_cents",
            "The fund's uncommitted money, in HKD cents.",
            labels=labels,
        ),
        "committed": GaugeMetricFamily(
            "aisc_fund_committed_cents",
            "Subsidy awarded and not yet spent (running jobs' holds included), in HKD cents.",
            labels=labels,
        ),
        "reserved": GaugeMetricFamily(
            "aisc_fund_reserved_cents",
            "The part of the committed subsidy held by running jobs, in HKD cents.",
            labels=labels,
        ),
        "spent": GaugeMetricFamily(
            "aisc_fund_spent_cents", "Subsidy paid for usage, in HKD cents.", labels=labels
        ),
    }
    for fund in figures.funds:
        values = {
            "total": fund.total_cents,
            "available": fund.available_cents,
            "committed": fund.committed_cents,
            "reserved": fund.reserved_cents,
            "spent": fund.spent_cents,
        }
        for key, family in families.items():
            family.add_metric([str(fund.scheme_id), fund.name], values[key])
    yield from families.values()


ALLOCATION_GAUGES = {
    "granted_gpu_seconds": "GPU-seconds the award granted.",
    "available_gpu_seconds": "GPU-seconds left to start jobs with.",
    "reserved_gpu_seconds": "GPU-seconds held by the allocation's running jobs.",
    "used_gpu_seconds": "GPU-seconds used and settled.",
    "subsidy_committed_cents": "Subsidy awarded and not yet held or spent, in HKD cents.",
    "subsidy_reserved_cents": "Subsidy held by running jobs, in HKD cents.",
    "subsidy_spent_cents": "Subsidy spent on settled usage, in HKD cents.",
}


def _allocation_families(figures: metrics.CentreFigures) -> Iterator[Metric]:
    labels = ["allocation_id", "scheme_id", "organisation", "gpu_model"]
    families = {
        key: GaugeMetricFamily(f"aisc_allocation_{key}", help_text, labels=labels)
        for key, help_text in ALLOCATION_GAUGES.items()
    }
    for item in figures.allocations:
        balance, allocation = item.balance, item.balance.allocation
        values = [
            str(allocation.id),
            str(allocation.scheme_id),
            item.organisation,
            allocation.gpu_model,
        ]
        for key, family in families.items():
            family.add_metric(values, getattr(balance, key))
    yield from families.values()


def install(app: FastAPI, runtime: Runtime) -> None:
    """Request ids, access logs and HTTP metrics for every request; GET /metrics."""
    registry = CollectorRegistry()
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=registry)
    registry.register(CentreCollector(runtime))
    registry.register(runtime.controller.cycle_seconds)
    app.add_middleware(
        RequestContextMiddleware, http=HttpMetrics(registry), routes=RouteTemplates(app)
    )

    def scrape(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Response:
        """Prometheus' text format (OpenMetrics when the scraper asks for it)."""
        expected = runtime.settings.metrics_token
        try:
            metrics.authorize_scrape(
                expected.get_secret_value() if expected else None,
                credentials.credentials if credentials else None,
            )
        except AuthenticationFailed as exc:
            # a problem body even though /metrics is outside /api/: scrapers are programs
            return problems.problem(401, exc.title, exc.detail, request.url.path)
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), media_type=content_type)

    app.add_api_route("/metrics", scrape, methods=["GET"], include_in_schema=False)
