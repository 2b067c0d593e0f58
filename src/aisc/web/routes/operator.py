"""The operators' pages: the centre at a glance, committee decisions, the cluster and its queue,
schemes and the rate card."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from aisc.api.deps import RuntimeDep
from aisc.domain.errors import Conflict, DomainError, NotFound, ValidationError
from aisc.domain.model import ApplicationStatus, JobState, OrgCategory
from aisc.domain.money import BASIS_POINTS, parse_cents
from aisc.runtime import Runtime
from aisc.services import (
    allocations,
    applications,
    decisions,
    jobs,
    nodes,
    rates,
    reviews,
    schemes,
    usage,
)
from aisc.services.context import utcnow
from aisc.store.tables import Application, Review
from aisc.web import forms
from aisc.web.render import page
from aisc.web.session import OperatorDep, PortalUser

router = APIRouter(include_in_schema=False)

RUNNING_STATES = [JobState.STARTING.value, JobState.RUNNING.value]
EXPLAINED_MAX = 100  # queued jobs whose scheduler reason the queue page asks for


def percent_text(bp: int) -> str:
    """7000 -> '70', 7250 -> '72.5'."""
    text = format(Decimal(bp) / 100, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def read_percent(form: FormData, name: str, errors: dict[str, str], label: str) -> int:
    """A percentage as typed ('70', '72.5') in basis points (7000, 7250)."""
    raw = forms.text(form, name).rstrip("%").strip()
    if not raw:
        errors[name] = f"{label} is required"
        return 0
    try:
        value = Decimal(raw)
    except InvalidOperation:
        errors[name] = f"{label} must be a percentage, e.g. 70"
        return 0
    bp = value * BASIS_POINTS / 100
    if not value.is_finite() or bp != bp.to_integral_value():
        errors[name] = f"{label} takes at most two decimal places"
        return 0
    if not 0 <= value <= 100:
        errors[name] = f"{label} must be between 0 and 100"
        return 0
    return int(bp)


def read_money(form: FormData, name: str, errors: dict[str, str], label: str) -> int:
    raw = forms.text(form, name).replace(",", "").removeprefix("HK$").strip()
    if not raw:
        errors[name] = f"{label} is required"
        return 0
    try:
        cents = parse_cents(raw)
    except ValidationError:
        errors[name] = f"{label} must be an amount in HK$, e.g. 1250000 or 36.50"
        return 0
    if cents <= 0:
        errors[name] = f"{label} must be positive"
    return cents


def capacity_of(statuses: Sequence[nodes.NodeStatus]) -> int:
    return sum(n.gpus for n in statuses)


# -- overview ----------------------------------------------------------------------------------


def utilisation_chart(series: Iterable[tuple[datetime, float]]) -> dict[str, Any]:
    points = list(series)
    return {
        "type": "line",
        "data": {
            "labels": [at.strftime("%m-%d %H:00") for at, _ in points],
            "datasets": [
                {
                    "label": "GPUs busy (% of capacity)",
                    "data": [round(fraction * 100, 1) for _, fraction in points],
                    "borderColor": "#0b6bcb",
                    "backgroundColor": "rgba(11, 107, 203, 0.12)",
                    "fill": True,
                    "pointRadius": 0,
                    "borderWidth": 1.5,
                }
            ],
        },
        "options": {
            "scales": {
                "y": {"min": 0, "max": 100, "title": {"display": True, "text": "%"}},
                "x": {"ticks": {"maxTicksLimit": 14}},
            },
            "plugins": {"legend": {"display": False}},
        },
    }


@router.get("/ops", response_class=HTMLResponse)
def overview(request: Request, runtime: RuntimeDep, user: OperatorDep) -> HTMLResponse:
    uow, actor = runtime.uow, user.actor
    now = utcnow()
    statuses = nodes.list_nodes(uow(), actor)
    capacity = capacity_of(statuses)
    busy = sum(len(n.busy_gpus) for n in statuses)
    queued = jobs.list_jobs(uow(), actor, states=[JobState.QUEUED.value])
    running = jobs.list_jobs(uow(), actor, states=RUNNING_STATES)
    awaiting = applications.list_applications(
        uow(), actor, status=ApplicationStatus.SUBMITTED.value
    )
    return page(
        request,
        "operator/overview.html",
        title="Operations",
        kpis=usage.kpis(uow(), actor, now, capacity),
        capacity=capacity,
        busy=busy,
        free=sum(n.free_gpus for n in statuses),
        nodes=statuses,
        queued=len(queued),
        running=len(running),
        awaiting=awaiting,
        funds=schemes.fund_positions(uow(), actor),
        chart=utilisation_chart(usage.utilisation_series(uow(), actor, now, capacity, days=14)),
    )


# -- applications and decisions ----------------------------------------------------------------


def score_table(
    apps: Sequence[Application], by_app: dict[int, list[Review]]
) -> tuple[list[int], dict[int, dict[int, float]], dict[int, float | None]]:
    """Reviewer columns, each application's weighted score per reviewer, and their mean."""
    reviewer_ids: list[int] = []
    cells: dict[int, dict[int, float]] = {}
    means: dict[int, float | None] = {}
    for app in apps:
        found = by_app.get(app.id, [])
        cells[app.id] = {r.reviewer_id: r.weighted_score for r in found}
        means[app.id] = statistics.fmean(r.weighted_score for r in found) if found else None
        for r in found:
            if r.reviewer_id not in reviewer_ids:
                reviewer_ids.append(r.reviewer_id)
    return sorted(reviewer_ids), cells, means


@router.get("/ops/applications", response_class=HTMLResponse)
def decisions_list(request: Request, runtime: RuntimeDep, user: OperatorDep) -> HTMLResponse:
    uow, actor = runtime.uow, user.actor
    everything = applications.list_applications(uow(), actor)
    by_app = reviews.reviews_by_application(uow(), actor)
    all_reviews = [r for found in by_app.values() for r in found]
    names = reviews.reviewer_names(uow(), actor, all_reviews)
    groups = []
    for key, heading, apps in (
        (
            "awaiting",
            "Awaiting decision",
            [a for a in everything if a.status == ApplicationStatus.SUBMITTED.value],
        ),
        (
            "decided",
            "Decided",
            [a for a in everything if a.status != ApplicationStatus.SUBMITTED.value][::-1],
        ),
    ):
        reviewer_ids, cells, means = score_table(apps, by_app)
        groups.append(
            {
                "key": key,
                "heading": heading,
                "apps": apps,
                "reviewers": reviewer_ids,
                "cells": cells,
                "means": means,
            }
        )
    return page(
        request,
        "operator/applications.html",
        title="Decisions",
        groups=groups,
        names=names,
        counts={app_id: len(found) for app_id, found in by_app.items()},
        schemes={s.id: s for s in schemes.list_schemes(uow())},
    )


def decision_page(
    request: Request,
    runtime: Runtime,
    user: PortalUser,
    application_id: int,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    flash: str = "",
    flash_ok: str = "",
    status_code: int = 200,
) -> HTMLResponse:
    uow, actor = runtime.uow, user.actor
    application = applications.get_application(uow(), actor, application_id)
    scheme = schemes.get_scheme(uow(), application.scheme_id)
    found = reviews.reviews_visible_to(uow(), actor, application_id)
    decided = decisions.get_decision(uow(), actor, application_id)
    fund = next((p for p in schemes.fund_positions(uow(), actor) if p.scheme_id == scheme.id), None)
    defaults = {
        "gpu_hours": str(application.gpu_hours),
        "starts_on": application.starts_on.isoformat(),
        "ends_on": application.ends_on.isoformat(),
        "subsidy_rate": percent_text(scheme.default_rate_bp),
        "rate_reason": "",
        "conditions": "",
        "reasons": "",
    }
    prices = [r for r in rates.list_rates(uow()) if r.gpu_model == application.gpu_model]
    return page(
        request,
        "operator/application.html",
        status_code=status_code,
        title=application.title,
        application=application,
        scheme=scheme,
        reviews=found,
        names=reviews.reviewer_names(uow(), actor, found),
        mean=statistics.fmean(r.weighted_score for r in found) if found else None,
        conflicts=reviews.conflicts_declared(uow(), actor, application_id),
        decision=decided[0] if decided else None,
        allocation_id=decided[1] if decided else None,
        fund=fund,
        prices=prices,
        declarations=applications.DECLARATIONS,
        default_rate=percent_text(scheme.default_rate_bp),
        max_rate=percent_text(scheme.max_rate_bp),
        values={**defaults, **(values or {})},
        errors=errors or {},
        flash=flash,
        flash_ok=flash_ok,
    )


@router.get("/ops/applications/{application_id}", response_class=HTMLResponse)
def decision_detail(
    request: Request, application_id: int, runtime: RuntimeDep, user: OperatorDep
) -> HTMLResponse:
    done = request.query_params.get("decided", "")
    messages = {
        "approved": "Approved: the award is committed from the fund and the allocation is open.",
        "rejected": "Rejected: the applicant has been told the reasons.",
    }
    return decision_page(request, runtime, user, application_id, flash_ok=messages.get(done, ""))


def refused(exc: DomainError) -> int:
    if isinstance(exc, NotFound):
        raise exc
    return 409 if isinstance(exc, Conflict) else 422 if isinstance(exc, ValidationError) else 403


@router.post("/ops/applications/{application_id}/approve", response_class=HTMLResponse)
async def approve(
    request: Request, application_id: int, runtime: RuntimeDep, user: OperatorDep
) -> Response:
    form = await request.form()
    names = ("gpu_hours", "starts_on", "ends_on", "subsidy_rate", "rate_reason", "conditions")
    values = {k: forms.text(form, k) for k in names}
    errors: dict[str, str] = {}
    gpu_hours = forms.whole_number(form, "gpu_hours", errors, "GPU-hours")
    if "gpu_hours" not in errors and gpu_hours <= 0:
        errors["gpu_hours"] = "an award must grant some GPU-hours"
    starts_on = forms.day(form, "starts_on", errors, "The start date")
    ends_on = forms.day(form, "ends_on", errors, "The end date")
    if not errors.keys() & {"starts_on", "ends_on"} and ends_on <= starts_on:
        errors["ends_on"] = "an award must end after it starts"
    rate_bp = read_percent(form, "subsidy_rate", errors, "The subsidy rate")
    if errors:
        return decision_page(
            request,
            runtime,
            user,
            application_id,
            values=values,
            errors=errors,
            flash="Please correct the fields marked below.",
            status_code=422,
        )
    terms = decisions.Approval(
        gpu_hours=gpu_hours,
        starts_on=starts_on,
        ends_on=ends_on,
        rate_bp=rate_bp,
        rate_reason=values["rate_reason"],
        conditions=values["conditions"],
    )
    try:
        decisions.approve(runtime.uow(), user.actor, application_id, terms)
    except DomainError as exc:
        return decision_page(
            request,
            runtime,
            user,
            application_id,
            values=values,
            flash=exc.detail,
            status_code=refused(exc),
        )
    return RedirectResponse(f"/ops/applications/{application_id}?decided=approved", 303)


@router.post("/ops/applications/{application_id}/reject", response_class=HTMLResponse)
async def reject(
    request: Request, application_id: int, runtime: RuntimeDep, user: OperatorDep
) -> Response:
    form = await request.form()
    reasons = forms.text(form, "reasons")
    if not reasons:
        return decision_page(
            request,
            runtime,
            user,
            application_id,
            values={"reasons": reasons},
            errors={"reasons": "a rejection needs its reasons"},
            status_code=422,
        )
    try:
        decisions.reject(runtime.uow(), user.actor, application_id, reasons)
    except DomainError as exc:
        return decision_page(
            request,
            runtime,
            user,
            application_id,
            values={"reasons": reasons},
            flash=exc.detail,
            status_code=refused(exc),
        )
    return RedirectResponse(f"/ops/applications/{application_id}?decided=rejected", 303)


# -- the cluster and the queue -----------------------------------------------------------------


def allocation_names(runtime: Runtime, user: PortalUser) -> dict[int, str]:
    return {
        b.allocation.id: b.allocation.name
        for b in allocations.list_allocations(runtime.uow(), user.actor)
    }


@router.get("/ops/cluster", response_class=HTMLResponse)
def cluster(request: Request, runtime: RuntimeDep, user: OperatorDep) -> HTMLResponse:
    uow, actor = runtime.uow, user.actor
    statuses = nodes.list_nodes(uow(), actor)
    return page(
        request,
        "operator/cluster.html",
        title="Cluster",
        nodes=statuses,
        capacity=capacity_of(statuses),
        busy=sum(len(n.busy_gpus) for n in statuses),
        running=jobs.list_jobs(uow(), actor, states=RUNNING_STATES),
        allocation_names=allocation_names(runtime, user),
        now=utcnow(),
    )


def queue_context(runtime: Runtime, user: PortalUser) -> dict[str, Any]:
    positions = runtime.controller.positions()
    entries = jobs.queue(runtime.uow(), user.actor, positions)
    reasons: dict[int, str] = {}
    for entry in entries:
        if entry.job.state != JobState.QUEUED.value:
            reasons[entry.job.id] = f"running on {entry.job.node}" if entry.job.node else ""
        elif len(reasons) < EXPLAINED_MAX:
            reasons[entry.job.id] = runtime.controller.explain(entry.job.id).reason
        else:
            reasons[entry.job.id] = entry.job.reason
    return {
        "entries": entries,
        "reasons": reasons,
        "allocation_names": allocation_names(runtime, user),
        "now": utcnow(),
        "waiting": sum(1 for e in entries if e.job.state == JobState.QUEUED.value),
    }


@router.get("/ops/queue", response_class=HTMLResponse)
def queue_page(request: Request, runtime: RuntimeDep, user: OperatorDep) -> HTMLResponse:
    return page(request, "operator/queue.html", title="Queue", **queue_context(runtime, user))


@router.get("/ops/queue/table", response_class=HTMLResponse)
def queue_table(request: Request, runtime: RuntimeDep, user: OperatorDep) -> HTMLResponse:
    """The live part of the queue page, polled by htmx."""
    return page(request, "operator/_queue_table.html", **queue_context(runtime, user))


# -- schemes -----------------------------------------------------------------------------------

CATEGORIES = [c.value for c in OrgCategory]
SCHEME_FIELDS = (
    "name",
    "fund_total",
    "starts_on",
    "ends_on",
    "default_rate",
    "max_rate",
    "rubric",
    "min_reviews",
)


def read_rubric(form: FormData, errors: dict[str, str]) -> dict[str, int]:
    rubric: dict[str, int] = {}
    lines = [line.strip() for line in forms.text(form, "rubric").splitlines() if line.strip()]
    if not lines:
        errors["rubric"] = "give at least one criterion, one per line as criterion=weight"
    for number, line in enumerate(lines, start=1):
        name, sep, weight = line.rpartition("=")
        if not sep or not name.strip():
            errors["rubric"] = f"line {number} is not criterion=weight: {line!r}"
            break
        try:
            value = int(weight.strip())
        except ValueError:
            errors["rubric"] = f"line {number}: the weight of {name.strip()!r} must be a number"
            break
        if name.strip() in rubric:
            errors["rubric"] = f"line {number}: {name.strip()!r} appears twice"
            break
        rubric[name.strip()] = value
    return rubric


def scheme_error_field(detail: str) -> str:
    """The form field a scheme service refusal belongs to."""
    text = detail.lower()
    for words, name in (
        (("rubric", "criterion"), "rubric"),
        (("category",), "eligible_categories"),
        (("rate",), "default_rate"),
        (("review",), "min_reviews"),
        (("fund total",), "fund_total"),
        (("end after",), "ends_on"),
        (("name", "scheme named"), "name"),
    ):
        if any(w in text for w in words):
            return name
    return "name"


def schemes_page(
    request: Request,
    runtime: Runtime,
    user: PortalUser,
    values: dict[str, Any],
    errors: dict[str, str],
    status_code: int = 200,
    created: str = "",
) -> HTMLResponse:
    uow, actor = runtime.uow, user.actor
    return page(
        request,
        "operator/schemes.html",
        status_code=status_code,
        title="Schemes",
        schemes=schemes.list_schemes(uow()),
        funds={p.scheme_id: p for p in schemes.fund_positions(uow(), actor)},
        categories=CATEGORIES,
        values=values,
        errors=errors,
        created=created,
        percent=percent_text,
    )


@router.get("/ops/schemes", response_class=HTMLResponse)
def schemes_list(request: Request, runtime: RuntimeDep, user: OperatorDep) -> HTMLResponse:
    created = request.query_params.get("created", "")
    values: dict[str, Any] = {
        "default_rate": percent_text(schemes.DEFAULT_RATE_BP),
        "max_rate": percent_text(schemes.MAX_RATE_BP),
        "min_reviews": "2",
        "eligible_categories": list(CATEGORIES),
        "rubric": "\n".join(
            f"{k}={v}"
            for k, v in {"alignment": 25, "feasibility": 25, "merit": 25, "impact": 25}.items()
        ),
    }
    return schemes_page(request, runtime, user, values, {}, created=created)


@router.post("/ops/schemes", response_class=HTMLResponse)
async def create_scheme(request: Request, runtime: RuntimeDep, user: OperatorDep) -> Response:
    form = await request.form()
    values: dict[str, Any] = {k: forms.text(form, k) for k in SCHEME_FIELDS}
    values["eligible_categories"] = [str(v) for v in form.getlist("eligible_categories")]
    errors: dict[str, str] = {}
    name = values["name"]
    if not name:
        errors["name"] = "a scheme needs a name"
    fund_cents = read_money(form, "fund_total", errors, "The fund total")
    starts_on = forms.day(form, "starts_on", errors, "The start date")
    ends_on = forms.day(form, "ends_on", errors, "The end date")
    if not errors.keys() & {"starts_on", "ends_on"} and ends_on <= starts_on:
        errors["ends_on"] = "a scheme must end after it starts"
    default_bp = read_percent(form, "default_rate", errors, "The default rate")
    max_bp = read_percent(form, "max_rate", errors, "The maximum rate")
    if not errors.keys() & {"default_rate", "max_rate"} and default_bp > max_bp:
        errors["max_rate"] = "the maximum rate cannot be below the default rate"
    if not values["eligible_categories"]:
        errors["eligible_categories"] = "choose at least one eligible category"
    rubric = read_rubric(form, errors)
    min_reviews = forms.whole_number(form, "min_reviews", errors, "Reviews needed")
    if "min_reviews" not in errors and min_reviews < 1:
        errors["min_reviews"] = "a scheme needs at least one review per application"
    if not errors:
        try:
            scheme = schemes.create_scheme(
                runtime.uow(),
                user.actor,
                name=name,
                fund_total_cents=fund_cents,
                starts_on=starts_on,
                ends_on=ends_on,
                rubric=rubric,
                eligible_categories=values["eligible_categories"],
                default_rate_bp=default_bp,
                max_rate_bp=max_bp,
                min_reviews=min_reviews,
            )
        except (ValidationError, Conflict) as exc:
            errors[scheme_error_field(exc.detail)] = exc.detail
        else:
            return RedirectResponse(f"/ops/schemes?created={scheme.id}", status_code=303)
    return schemes_page(request, runtime, user, values, errors, status_code=422)


# -- the rate card -----------------------------------------------------------------------------


def rates_page(
    request: Request,
    runtime: Runtime,
    user: PortalUser,
    values: dict[str, str],
    errors: dict[str, str],
    status_code: int = 200,
    created: bool = False,
) -> HTMLResponse:
    now = utcnow()
    card = rates.list_rates(runtime.uow())
    # the price in force for each model now: the latest one already effective
    in_force: dict[str, int] = {}
    for rate in card:
        if rate.effective_from <= now:
            in_force[rate.gpu_model] = rate.id
    return page(
        request,
        "operator/rates.html",
        status_code=status_code,
        title="Rate card",
        rates=card,
        in_force=set(in_force.values()),
        now=now,
        models=sorted({r.gpu_model for r in card}),
        values=values,
        errors=errors,
        created=created,
    )


@router.get("/ops/rates", response_class=HTMLResponse)
def rates_list(request: Request, runtime: RuntimeDep, user: OperatorDep) -> HTMLResponse:
    created = request.query_params.get("created") == "1"
    return rates_page(request, runtime, user, {}, {}, created=created)


def rate_error_field(detail: str) -> str:
    text = detail.lower()
    if "model" in text:
        return "gpu_model"
    if "price per" in text:
        return "price"
    return "effective_from"


@router.post("/ops/rates", response_class=HTMLResponse)
async def set_rate(request: Request, runtime: RuntimeDep, user: OperatorDep) -> Response:
    form = await request.form()
    values = {k: forms.text(form, k) for k in ("gpu_model", "price", "effective_from")}
    errors: dict[str, str] = {}
    if not values["gpu_model"]:
        errors["gpu_model"] = "a GPU model is required"
    cents = read_money(form, "price", errors, "The price per GPU-hour")
    effective: datetime | None = None
    if values["effective_from"]:
        try:
            effective = datetime.fromisoformat(values["effective_from"])
        except ValueError:
            errors["effective_from"] = "give a date and time, e.g. 2026-01-01T00:00"
        else:
            if effective.tzinfo is None:
                effective = effective.replace(tzinfo=UTC)
    if not errors:
        try:
            rates.set_rate(runtime.uow(), user.actor, values["gpu_model"], cents, effective)
        except (ValidationError, Conflict) as exc:
            errors[rate_error_field(exc.detail)] = exc.detail
        else:
            return RedirectResponse("/ops/rates?created=1", status_code=303)
    return rates_page(request, runtime, user, values, errors, status_code=422)
