"""/metrics agrees with what the services say; every request has an id that its logs carry."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr, ValidationError

from aisc import __version__
from aisc.api.app import create_app
from aisc.config import Settings
from aisc.logs import build_handler
from aisc.runtime import Runtime
from aisc.services import allocations, jobs, nodes, schemes
from aisc.services.context import SYSTEM
from tests.api.conftest import TokenFor
from tests.builders import Centre, award, build_centre
from tests.driving import cycle_until

PY = sys.executable
ORG = "Harbour University"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient, **headers: str) -> Samples:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def state_of(runtime: Runtime, job_id: int) -> str:
    return jobs.get_job(runtime.uow(), SYSTEM, job_id).state


@dataclass
class Busy:
    centre: Centre
    allocation_id: int
    done: int  # completed and charged
    running: int  # holds a whole node
    queued: int  # needs both nodes


@pytest.fixture
def busy(runtime: Runtime) -> Iterator[Busy]:
    """A centre with an award, one job finished and charged, one running, one queued."""
    centre = build_centre(runtime.uow)
    allocation_id = award(centre, ORG, gpu_hours=100)
    actor = centre.applicants[ORG]

    def submit(argv: list[str], gpus: int) -> int:
        request = jobs.JobRequest(allocation_id, argv, gpus, 120)
        return jobs.submit_job(runtime.uow(), actor, request).id

    done = submit([PY, "-c", "import time; time.sleep(0.3)"], 4)
    cycle_until(runtime.controller, lambda: state_of(runtime, done) == "completed")
    running = submit([PY, "-c", "import time; time.sleep(60)"], 8)
    cycle_until(runtime.controller, lambda: state_of(runtime, running) == "running")
    queued = submit([PY, "-c", "pass"], 16)
    runtime.controller.cycle()
    try:
        yield Busy(centre, allocation_id, done, running, queued)
    finally:
        jobs.cancel_job(runtime.uow(), SYSTEM, queued)
        jobs.cancel_job(runtime.uow(), SYSTEM, running)
        cycle_until(runtime.controller, lambda: state_of(runtime, running) == "cancelled")


def test_metrics_agree_with_the_services_and_the_ledger(
    client: TestClient, runtime: Runtime, busy: Busy
) -> None:
    assert state_of(runtime, busy.queued) == "queued"
    samples = scrape(client)

    every = jobs.list_jobs(runtime.uow(), SYSTEM)
    for state in ("queued", "starting", "running", "completed", "failed", "cancelled"):
        assert value(samples, "aisc_jobs", state=state) == sum(j.state == state for j in every)
    assert value(samples, "aisc_queue_depth", gpu_model="H800") == 1
    assert value(samples, "aisc_queue_gpus", gpu_model="H800") == 16
    assert value(samples, "aisc_jobs_started_total") == 2
    assert value(samples, "aisc_jobs_finished_total", state="completed") == 1
    assert value(samples, "aisc_jobs_finished_total", state="failed") == 0

    cluster = nodes.list_nodes(runtime.uow(), SYSTEM)
    assert value(samples, "aisc_gpus", gpu_model="H800") == sum(n.gpus for n in cluster) == 16
    busy_gpus = sum(len(n.busy_gpus) for n in cluster)
    assert value(samples, "aisc_gpus_busy", gpu_model="H800") == busy_gpus == 8

    (fund,) = schemes.fund_positions(runtime.uow(), busy.centre.funder)
    scheme = {"scheme_id": str(fund.scheme_id), "scheme": fund.name}
    figures = {
        "total": fund.total_cents,
        "available": fund.available_cents,
        "committed": fund.committed_cents,
        "reserved": fund.reserved_cents,
        "spent": fund.spent_cents,
    }
    for key, cents in figures.items():
        assert value(samples, f"aisc_fund_{key}_cents", **scheme) == cents
    assert fund.spent_cents > 0 and fund.reserved_cents > 0  # one job charged, one holding
    assert figures["total"] == figures["available"] + figures["committed"] + figures["spent"]

    (balance,) = allocations.list_allocations(runtime.uow(), SYSTEM)
    labels = {
        "allocation_id": str(busy.allocation_id),
        "scheme_id": str(fund.scheme_id),
        "organisation": ORG,
        "gpu_model": "H800",
    }
    assert balance.reserved_gpu_seconds == 8 * 120 and balance.used_gpu_seconds > 0
    for key in (
        "granted_gpu_seconds",
        "available_gpu_seconds",
        "reserved_gpu_seconds",
        "used_gpu_seconds",
        "subsidy_committed_cents",
        "subsidy_reserved_cents",
        "subsidy_spent_cents",
    ):
        assert value(samples, f"aisc_allocation_{key}", **labels) == getattr(balance, key), key

    database = runtime.engine.dialect.name
    info = value(samples, "aisc_info", version=__version__, backend="local", database=database)
    assert info == 1 and value(samples, "aisc_backend_up") == 1


def test_counters_survive_a_restart_because_they_come_from_the_database(
    runtime: Runtime, busy: Busy
) -> None:
    with TestClient(create_app(runtime, run_controller=False)) as first:
        before = scrape(first)
    with TestClient(create_app(runtime, run_controller=False)) as second:
        after = scrape(second)
    for name, labels in (
        ("aisc_jobs_started_total", {}),
        ("aisc_jobs_finished_total", {"state": "completed"}),
    ):
        assert value(before, name, **labels) == value(after, name, **labels) > 0


def test_an_empty_centre_scrapes_with_zeros(client: TestClient) -> None:
    samples = scrape(client)
    assert value(samples, "aisc_jobs", state="queued") == 0
    assert value(samples, "aisc_jobs_started_total") == 0
    assert value(samples, "aisc_gpus", gpu_model="H800") == 16
    assert value(samples, "aisc_gpus_busy", gpu_model="H800") == 0
    assert not any(name.startswith("aisc_fund_") for name, _ in samples)


def test_a_controller_cycle_is_timed(client: TestClient, runtime: Runtime) -> None:
    before = value(scrape(client), "aisc_scheduler_cycle_seconds_count")
    runtime.controller.cycle()
    runtime.controller.cycle()
    after = scrape(client)
    assert value(after, "aisc_scheduler_cycle_seconds_count") == before + 2
    assert value(after, "aisc_scheduler_cycle_seconds_bucket", le="+Inf") == before + 2
    assert value(after, "aisc_scheduler_cycle_seconds_sum") > 0


def test_http_requests_are_counted_by_route_template_and_status(
    client: TestClient, runtime: Runtime, auth: TokenFor
) -> None:
    operator = build_centre(runtime.uow).operator
    assert client.get("/api/v1/health").status_code == 200
    assert client.get("/api/v1/jobs/424242", headers=auth(operator)).status_code == 404
    assert client.get("/no/such/page/123").status_code == 404
    assert client.request("BREW", "/api/v1/health").status_code == 405
    samples = scrape(client)
    requests = "aisc_http_requests_total"
    assert value(samples, requests, method="GET", route="/api/v1/health", status="200") == 1
    assert value(samples, requests, method="GET", route="/api/v1/jobs/{job_id}", status="404") == 1
    assert value(samples, requests, method="GET", route="unmatched", status="404") == 1
    assert value(samples, requests, method="other", route="/api/v1/health", status="405") == 1
    assert not any("424242" in str(labels) for _, labels in samples)
    duration = "aisc_http_request_duration_seconds_count"
    assert value(samples, duration, method="GET", route="/api/v1/jobs/{job_id}") == 1


def test_metrics_stay_out_of_the_openapi_document(client: TestClient) -> None:
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_the_metrics_token_guards_metrics_when_set(runtime: Runtime) -> None:
    runtime.settings = runtime.settings.model_copy(update={"metrics_token": SecretStr("s3cret")})
    with TestClient(create_app(runtime, run_controller=False)) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            refused = client.get("/metrics", headers=headers)
            assert refused.status_code == 401
            assert refused.headers["content-type"].startswith("application/problem+json")
            body = refused.json()
            assert body["status"] == 401 and "AISC_METRICS_TOKEN" in body["detail"]
            assert body["request_id"] == refused.headers["X-Request-ID"]
            assert "aisc_jobs" not in refused.text
        allowed = scrape(client, Authorization="Bearer s3cret")
        assert value(allowed, "aisc_jobs", state="queued") == 0


def test_a_request_id_is_made_or_echoed(client: TestClient) -> None:
    made = client.get("/api/v1/health").headers["X-Request-ID"]
    again = client.get("/api/v1/health").headers["X-Request-ID"]
    assert len(made) == 32 and int(made, 16) >= 0 and made != again
    echoed = client.get("/api/v1/health", headers={"X-Request-ID": "lb-7f3a.01:9"})
    assert echoed.headers["X-Request-ID"] == "lb-7f3a.01:9"
    for unsafe in ("x" * 129, "a b", "id;drop", '"quoted"'):
        replaced = client.get("/api/v1/health", headers={"X-Request-ID": unsafe})
        assert replaced.headers["X-Request-ID"] != unsafe
        assert len(replaced.headers["X-Request-ID"]) == 32


def test_problem_bodies_carry_the_request_id(client: TestClient) -> None:
    refused = client.get("/api/v1/schemes", headers={"X-Request-ID": "trace-123"})
    assert refused.status_code == 401
    assert refused.json()["request_id"] == "trace-123" == refused.headers["X-Request-ID"]


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """What the server's JSON handler writes, for the loggers a request touches."""
    stream = io.StringIO()
    handler = build_handler("json", stream)
    names = ("aisc.access", "tests.observability")
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)
    try:
        yield stream
    finally:
        logging.getLogger().removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def parsed(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_records_logged_while_handling_a_request_carry_its_id_as_json(
    runtime: Runtime, log_lines: io.StringIO
) -> None:
    app = create_app(runtime, run_controller=False)
    log = logging.getLogger("tests.observability")

    def noisy() -> dict[str, str]:  # a sync endpoint: it runs on a worker thread
        log.info("working on it", extra={"job_id": 7})
        return {}

    app.add_api_route("/api/v1/noisy", noisy, methods=["GET"])
    with TestClient(app) as client:
        first = client.get("/api/v1/noisy").headers["X-Request-ID"]
        second = client.get("/api/v1/noisy", headers={"X-Request-ID": "caller-1"})
    log.info("outside any request")

    lines = parsed(log_lines)
    work = [line for line in lines if line["message"] == "working on it"]
    assert [line["request_id"] for line in work] == [first, "caller-1"]
    assert work[0]["logger"] == "tests.observability" and work[0]["level"] == "INFO"
    assert work[0]["job_id"] == 7 and isinstance(work[0]["time"], str)
    access = [line for line in lines if line["logger"] == "aisc.access"]
    assert [line["request_id"] for line in access] == [first, "caller-1"]
    assert access[1]["method"] == "GET" and access[1]["status"] == 200
    assert access[1]["route"] == "/api/v1/noisy" and access[1]["path"] == "/api/v1/noisy"
    assert isinstance(access[1]["duration_ms"], float) and access[1]["duration_ms"] >= 0
    assert second.headers["X-Request-ID"] == "caller-1"
    (outside,) = [line for line in lines if line["message"] == "outside any request"]
    assert outside["request_id"] is None


def test_the_text_format_shows_the_request_id() -> None:
    stream = io.StringIO()
    handler = build_handler("text", stream)
    record = logging.LogRecord("aisc.x", logging.WARNING, __file__, 1, "hello %s", ("you",), None)
    handler.handle(record)
    line = stream.getvalue().strip()
    assert line.endswith("WARNING aisc.x [-] hello you")


def test_log_settings_are_checked() -> None:
    assert Settings(log_format="JSON", log_level="debug").log_level == "DEBUG"
    with pytest.raises(ValidationError, match="log format"):
        Settings(log_format="xml")
    with pytest.raises(ValidationError, match="log level"):
        Settings(log_level="loud")
