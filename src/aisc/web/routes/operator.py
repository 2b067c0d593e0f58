"""The operators' pages: the centre at a glance, committee decisions, the cluster and its queue,
allocations, people (organisations and users), schemes and the rate card."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from aisc.api.deps import RuntimeDep
from aisc.domain.errors import Conflict, DomainError, NotFound, ValidationError
from aisc.domain.model import ApplicationStatus, JobState, OrgCategory, Role
from aisc.domain.money import BASIS_POINTS, parse_cents
from aisc.runtime import Runtime
from aisc.services import (
    accounts,
    allocations,
    applications,
    decisions,
    jobs,
    nodes,
    rates,
    reviews,
    schemes,
    sessions,
    usage,
)
from aisc.services.context import utcnow
from aisc.store.tables import Application, Review
from aisc.web import forms
from aisc.web.render import hkd, page
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
    with uow() as reading:
        price = decisions.award_price(reading, application.gpu_model, application.starts_on)
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
        assigned=reviews.assigned_reviewers(uow(), actor, application_id),
        all_reviewers=reviews.reviewers(uow(), actor),
        decision=decided[0] if decided else None,
        allocation_id=decided[1] if decided else None,
        fund=fund,
        price=price,
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
    again = partial(decision_page, request, runtime, user, application_id, values=values)
    if errors:
        return again(
            errors=errors, flash="Please correct the fields marked below.", status_code=422
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
        return again(flash=exc.detail, status_code=refused(exc))
    return RedirectResponse(f"/ops/applications/{application_id}?decided=approved", 303)


@router.post("/ops/applications/{application_id}/reject", response_class=HTMLResponse)
async def reject(
    request: Request, application_id: int, runtime: RuntimeDep, user: OperatorDep
) -> Response:
    form = await request.form()
    reasons = forms.text(form, "reasons")
    again = partial(
        decision_page, request, runtime, user, application_id, values={"reasons": reasons}
    )
    if not reasons:
        return again(errors={"reasons": "a rejection needs its reasons"}, status_code=422)
    try:
        decisions.reject(runtime.uow(), user.actor, application_id, reasons)
    except DomainError as exc:
        return again(flash=exc.detail, status_code=refused(exc))
    return RedirectResponse(f"/ops/applications/{application_id}?decided=rejected", 303)


@router.post("/ops/applications/{application_id}/assign", response_class=HTMLResponse)
async def assign(
    request: Request, application_id: int, runtime: RuntimeDep, user: OperatorDep
) -> Response:
    """Ask a reviewer to review the application, or (with `remove`) withdraw the request."""
    form = await request.form()
    errors: dict[str, str] = {}
    reviewer_id = forms.whole_number(form, "reviewer_id", errors, "The reviewer")
    if errors:
        return decision_page(
            request, runtime, user, application_id, flash=errors["reviewer_id"], status_code=422
        )
    try:
        if forms.checked(form, "remove"):
            reviews.unassign_reviewer(runtime.uow(), user.actor, application_id, reviewer_id)
        else:
            reviews.assign_reviewer(runtime.uow(), user.actor, application_id, reviewer_id)
    except DomainError as exc:
        return decision_page(
            request, runtime, user, application_id, flash=exc.detail, status_code=refused(exc)
        )
    return RedirectResponse(f"/ops/applications/{application_id}#reviewers-h", 303)


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
            _, why = jobs.explain_job(
                runtime.uow(), user.actor, entry.job.id, runtime.controller.explain
            )
            reasons[entry.job.id] = why.reason
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
    return forms.field_of(
        detail,
        (
            (("rubric", "criterion"), "rubric"),
            (("category",), "eligible_categories"),
            (("rate",), "default_rate"),
            (("review",), "min_reviews"),
            (("fund total",), "fund_total"),
            (("end after",), "ends_on"),
            (("name", "scheme named"), "name"),
        ),
        "name",
    )


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


# -- allocations -------------------------------------------------------------------------------


def allocations_page(
    request: Request,
    runtime: Runtime,
    user: PortalUser,
    *,
    flash: str = "",
    flash_ok: str = "",
    status_code: int = 200,
) -> HTMLResponse:
    uow, actor = runtime.uow, user.actor
    balances = allocations.list_allocations(uow(), actor)
    return page(
        request,
        "operator/allocations.html",
        status_code=status_code,
        title="Allocations",
        balances=balances,
        active=sum(1 for b in balances if b.status == "active"),
        orgs={o.id: o.name for o in accounts.list_organisations(uow(), actor)},
        scheme_names={s.id: s.name for s in schemes.list_schemes(uow())},
        flash=flash,
        flash_ok=flash_ok,
    )


@router.get("/ops/allocations", response_class=HTMLResponse)
def allocations_list(request: Request, runtime: RuntimeDep, user: OperatorDep) -> HTMLResponse:
    flash_ok = ""
    closed, returned = request.query_params.get("closed", ""), request.query_params.get("returned")
    if closed.isdigit() and returned is not None and returned.isdigit():
        flash_ok = (
            f"Allocation {closed} was closed: {hkd(int(returned))} of unspent subsidy returned "
            "to the fund and its unused GPU-hours lapsed."
        )
    return allocations_page(request, runtime, user, flash_ok=flash_ok)


@router.post("/ops/allocations/{allocation_id}/close", response_class=HTMLResponse)
async def close_allocation(
    request: Request, allocation_id: int, runtime: RuntimeDep, user: OperatorDep
) -> Response:
    before = allocations.get_allocation(runtime.uow(), user.actor, allocation_id)  # 404 if none
    try:
        after = allocations.close_allocation(runtime.uow(), user.actor, allocation_id)
    except DomainError as exc:
        return allocations_page(
            request,
            runtime,
            user,
            flash=f"Allocation {allocation_id} was not closed: {exc.detail}",
            status_code=refused(exc),
        )
    # the allocation's subsidy (committed + held + spent) only moves to the fund when it closes,
    # so what the fund got back is the difference, even if a job settled in between
    held = before.subsidy_committed_cents + before.subsidy_reserved_cents
    returned = held + before.subsidy_spent_cents - after.subsidy_spent_cents
    return RedirectResponse(
        f"/ops/allocations?closed={allocation_id}&returned={max(returned, 0)}", status_code=303
    )


# -- people: organisations and users -----------------------------------------------------------

ROLES = [r.value for r in Role]
NAME_MAX, EMAIL_MAX, SECTOR_MAX = 200, 320, 100
USER_FIELDS = ("name", "email", "role", "org_id", "slurm_user")  # a password is never echoed


def password_of(form: FormData, name: str = "password") -> str:
    """A password as typed: unlike other fields, its spaces are part of it."""
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def people_page(
    request: Request,
    runtime: Runtime,
    user: PortalUser,
    *,
    org_values: dict[str, str] | None = None,
    org_errors: dict[str, str] | None = None,
    user_values: dict[str, str] | None = None,
    user_errors: dict[str, str] | None = None,
    row_errors: dict[int, str] | None = None,
    flash: str = "",
    flash_ok: str = "",
    status_code: int = 200,
) -> HTMLResponse:
    uow, actor = runtime.uow, user.actor
    orgs = accounts.list_organisations(uow(), actor)
    users = accounts.list_users(uow(), actor)
    members: dict[int, int] = {}
    for u in users:
        if u.org_id is not None:
            members[u.org_id] = members.get(u.org_id, 0) + 1
    return page(
        request,
        "operator/people.html",
        status_code=status_code,
        title="People",
        orgs=orgs,
        org_names={o.id: o.name for o in orgs},
        members=members,
        users=users,
        category_options=[(c, c.replace("_", " ")) for c in CATEGORIES],
        role_options=[(r, r) for r in ROLES],
        org_options=[("", "— none —"), *((str(o.id), o.name) for o in orgs)],
        password_min=sessions.PASSWORD_MIN,
        org_values=org_values or {"category": OrgCategory.UNIVERSITY.value},
        org_errors=org_errors or {},
        user_values=user_values or {"role": Role.APPLICANT.value},
        user_errors=user_errors or {},
        row_errors=row_errors or {},
        flash=flash,
        flash_ok=flash_ok,
    )


def people_message(runtime: Runtime, user: PortalUser, params: dict[str, str]) -> str:
    """The confirmation a redirect back to the people page asks for."""
    if params.get("org", "").isdigit():
        org_id = int(params["org"])
        names = {o.id: o.name for o in accounts.list_organisations(runtime.uow(), user.actor)}
        if org_id in names:
            return f"Organisation {names[org_id]} was created; add its members below."
    if not params.get("user", "").isdigit():
        return ""
    found = {u.id: u for u in accounts.list_users(runtime.uow(), user.actor)}.get(
        int(params["user"])
    )
    if found is None:
        return ""
    who = f"{found.name} ({found.email})"
    did = params.get("did", "")
    if did == "created" and found.password_hash is None:
        return (
            f"{who} was created without a portal password: they sign in with the centre's "
            "single sign-on or an API token, or you set one below."
        )
    return {
        "created": f"{who} was created. Pass their initial password on to them securely; "
        "they change it under Account once signed in.",
        "password": f"{who} has a new password and every session of theirs has ended. "
        "Pass the new password on to them securely.",
        "deactivated": f"{who} was deactivated: their sessions have ended and their API tokens "
        "no longer work.",
        "reactivated": f"{who} was reactivated and can sign in again.",
    }.get(did, "")


@router.get("/ops/people", response_class=HTMLResponse)
def people(request: Request, runtime: RuntimeDep, user: OperatorDep) -> HTMLResponse:
    message = people_message(runtime, user, dict(request.query_params))
    return people_page(request, runtime, user, flash_ok=message)


def org_error_field(detail: str) -> str:
    text = detail.lower()
    return "category" if "category" in text else "sector" if "sector" in text else "org_name"


@router.post("/ops/people/organisations", response_class=HTMLResponse)
async def create_organisation(request: Request, runtime: RuntimeDep, user: OperatorDep) -> Response:
    form = await request.form()
    values = {k: forms.text(form, k) for k in ("org_name", "category", "sector")}
    errors: dict[str, str] = {}
    if not values["org_name"]:
        errors["org_name"] = "an organisation needs a name"
    elif len(values["org_name"]) > NAME_MAX:
        errors["org_name"] = f"the name takes at most {NAME_MAX} characters"
    if values["category"] not in CATEGORIES:
        errors["category"] = "choose one of the categories"
    if len(values["sector"]) > SECTOR_MAX:
        errors["sector"] = f"the sector takes at most {SECTOR_MAX} characters"
    status_code = 422
    if not errors:
        try:
            org = accounts.create_organisation(
                runtime.uow(), user.actor, values["org_name"], values["category"], values["sector"]
            )
        except (ValidationError, Conflict) as exc:
            errors[org_error_field(exc.detail)] = exc.detail
            status_code = 409 if isinstance(exc, Conflict) else 422
        else:
            return RedirectResponse(f"/ops/people?org={org.id}", status_code=303)
    return people_page(
        request,
        runtime,
        user,
        org_values=values,
        org_errors=errors,
        flash="The organisation was not created; please correct the fields marked below.",
        status_code=status_code,
    )


def read_new_user(
    form: FormData, values: dict[str, str], org_ids: set[int], errors: dict[str, str]
) -> tuple[int | None, str | None]:
    """Checks the create-user form the way create_user will, so each problem sits beside its
    field; returns the organisation id and Slurm user name."""
    if not values["name"]:
        errors["name"] = "a user needs a name"
    elif len(values["name"]) > NAME_MAX:
        errors["name"] = f"the name takes at most {NAME_MAX} characters"
    email = values["email"].lower()
    if not email:
        errors["email"] = "an email address is required"
    elif len(email) > EMAIL_MAX or not accounts.EMAIL.match(email):
        errors["email"] = f"{values['email']!r} is not an email address"
    if values["role"] not in ROLES:
        errors["role"] = "choose one of the roles"
    org_id: int | None = None
    if values["org_id"]:
        if values["org_id"].isdigit() and int(values["org_id"]) in org_ids:
            org_id = int(values["org_id"])
        else:
            errors["org_id"] = "choose an organisation from the list"
    elif values["role"] == Role.APPLICANT.value:
        errors["org_id"] = "an applicant must belong to an organisation"
    slurm_user: str | None = None
    if values["slurm_user"]:
        try:
            slurm_user = accounts.unix_user(values["slurm_user"])
        except ValidationError as exc:
            errors["slurm_user"] = exc.detail
    password = password_of(form)
    if password:
        try:
            sessions.check_password_strength(password)
        except ValidationError as exc:
            errors["password"] = exc.detail
    return org_id, slurm_user


def user_error_field(detail: str) -> str:
    return forms.field_of(
        detail,
        (
            (("slurm", "unix user"), "slurm_user"),
            (("email",), "email"),
            (("organisation",), "org_id"),
            (("role",), "role"),
            (("password",), "password"),
        ),
        "name",
    )


@router.post("/ops/people/users", response_class=HTMLResponse)
async def create_user(request: Request, runtime: RuntimeDep, user: OperatorDep) -> Response:
    form = await request.form()
    values = {k: forms.text(form, k) for k in USER_FIELDS}
    errors: dict[str, str] = {}
    org_ids = {o.id for o in accounts.list_organisations(runtime.uow(), user.actor)}
    # the password is checked here, before the user exists: creating them and setting their
    # password are two units of work, and a refused password must leave nobody behind
    org_id, slurm_user = read_new_user(form, values, org_ids, errors)
    status_code = 422
    if not errors:
        try:
            created = accounts.create_user(
                runtime.uow(),
                user.actor,
                values["name"],
                values["email"],
                values["role"],
                org_id,
                slurm_user,
            )
        except (ValidationError, Conflict, NotFound) as exc:
            errors[user_error_field(exc.detail)] = exc.detail
            status_code = 409 if isinstance(exc, Conflict) else 422
        else:
            password = password_of(form)
            if password:
                sessions.set_password(runtime.uow(), user.actor, created.id, password)
            return RedirectResponse(f"/ops/people?user={created.id}&did=created", 303)
    return people_page(
        request,
        runtime,
        user,
        user_values=values,
        user_errors=errors,
        flash="The user was not created; please correct the fields marked below.",
        status_code=status_code,
    )


@router.post("/ops/people/users/{user_id}/password", response_class=HTMLResponse)
async def reset_password(
    request: Request, user_id: int, runtime: RuntimeDep, user: OperatorDep
) -> Response:
    form = await request.form()
    try:
        sessions.set_password(runtime.uow(), user.actor, user_id, password_of(form))
    except ValidationError as exc:
        return people_page(
            request,
            runtime,
            user,
            row_errors={user_id: exc.detail},
            flash=f"The password was not changed: {exc.detail}.",
            status_code=422,
        )
    if user_id == user.actor.user_id:  # their own sessions, this one included, have ended
        return RedirectResponse("/login?next=/ops/people", status_code=303)
    return RedirectResponse(f"/ops/people?user={user_id}&did=password", status_code=303)


@router.post("/ops/people/users/{user_id}/active", response_class=HTMLResponse)
async def set_user_active(
    request: Request, user_id: int, runtime: RuntimeDep, user: OperatorDep
) -> Response:
    form = await request.form()
    choice = forms.text(form, "active")
    if choice not in ("true", "false"):
        return people_page(
            request,
            runtime,
            user,
            flash="Say whether the user is to be active (true) or not (false).",
            status_code=422,
        )
    active = choice == "true"
    try:
        accounts.set_user_active(runtime.uow(), user.actor, user_id, active)
    except ValidationError as exc:
        return people_page(
            request,
            runtime,
            user,
            row_errors={user_id: exc.detail},
            flash=exc.detail[:1].upper() + exc.detail[1:] + ".",
            status_code=422,
        )
    did = "reactivated" if active else "deactivated"
    return RedirectResponse(f"/ops/people?user={user_id}&did={did}", status_code=303)
