"""The applicant's and grantee's pages: organisation, applications, allocations, jobs,
invoices and progress reports."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from aisc.api.deps import RuntimeDep
from aisc.domain.errors import DomainError, PermissionDenied, ValidationError
from aisc.domain.model import RiskTier
from aisc.services import (
    accounts,
    allocations,
    applications,
    decisions,
    invoices,
    jobs,
    progress,
    rates,
    schemes,
    usage,
)
from aisc.services.context import utcnow
from aisc.services.invoice_pdf import invoice_pdf
from aisc.web import forms
from aisc.web.render import page
from aisc.web.session import ApplicantDep, PortalUser

router = APIRouter(include_in_schema=False)


def org_id_of(user: PortalUser) -> int:
    assert user.actor.org_id is not None  # an applicant always belongs to an organisation
    return user.actor.org_id


# -- overview and organisation profile ---------------------------------------------------------


@router.get("/org", response_class=HTMLResponse)
def overview(request: Request, runtime: RuntimeDep, user: ApplicantDep) -> HTMLResponse:
    uow, actor = runtime.uow, user.actor
    org = accounts.get_organisation(uow(), actor, org_id_of(user))
    return page(
        request,
        "applicant/overview.html",
        title=org.name,
        org=org,
        members=accounts.organisation_members(uow(), actor, org.id),
        allocations=allocations.list_allocations(uow(), actor),
        applications=applications.list_applications(uow(), actor),
        live_jobs=jobs.list_jobs(uow(), actor, states=[s.value for s in jobs.LIVE_STATES]),
        errors={},
    )


@router.post("/org/profile")
def update_profile(
    runtime: RuntimeDep, user: ApplicantDep, sector: Annotated[str, Form()] = ""
) -> Response:
    accounts.update_organisation(runtime.uow(), user.actor, org_id_of(user), sector)
    return RedirectResponse("/org", status_code=303)


# -- applications ------------------------------------------------------------------------------

STEPS = [
    ("request", "Compute request"),
    ("governance", "AI governance"),
    ("declarations", "Declarations"),
    ("review", "Review and submit"),
]
STEP_FIELDS = {
    "request": {
        "scheme_id",
        "title",
        "gpu_model",
        "gpu_hours",
        "starts_on",
        "ends_on",
        "justification",
    },
    "governance": {
        "intended_use",
        "risk_tier",
        "human_oversight",
        "personal_data",
        "personal_data_details",
    },
    "declarations": {"declarations"},
}
FIELD_STEP = {f: step for step, fields in STEP_FIELDS.items() for f in fields}


def read_application(form: FormData) -> tuple[applications.ApplicationRequest, dict[str, str]]:
    errors: dict[str, str] = {}
    scheme_id = forms.whole_number(form, "scheme_id", errors, "The scheme")
    gpu_hours = forms.whole_number(form, "gpu_hours", errors, "GPU-hours")
    starts_on = forms.day(form, "starts_on", errors, "The start date")
    ends_on = forms.day(form, "ends_on", errors, "The end date")
    request = applications.ApplicationRequest(
        scheme_id=scheme_id,
        title=forms.text(form, "title"),
        gpu_model=forms.text(form, "gpu_model"),
        gpu_hours=gpu_hours,
        starts_on=starts_on,
        ends_on=ends_on,
        justification=forms.text(form, "justification"),
        governance=applications.GovernanceAssessment(
            intended_use=forms.text(form, "intended_use"),
            personal_data=forms.checked(form, "personal_data"),
            risk_tier=forms.text(form, "risk_tier"),
            human_oversight=forms.text(form, "human_oversight"),
            personal_data_details=forms.text(form, "personal_data_details"),
        ),
        declarations=tuple(str(v) for v in form.getlist("declarations")),
    )
    # the service's own checks, but only where the form had no parsing problem already
    for name, message in applications.check_request(request).items():
        errors.setdefault(name, message)
    missing = set(applications.DECLARATIONS) - set(request.declarations)
    if missing:
        errors.setdefault("declarations", "every declaration is needed to apply")
    return request, errors


def application_form(
    request: Request,
    runtime: RuntimeDep,
    step: str,
    values: dict[str, Any],
    errors: dict[str, str],
    status_code: int = 200,
) -> HTMLResponse:
    uow = runtime.uow
    return page(
        request,
        "applicant/apply.html",
        status_code=status_code,
        title="Apply for compute",
        steps=STEPS,
        step=step,
        step_fields=STEP_FIELDS,
        values=values,
        errors=errors,
        schemes=schemes.list_schemes(uow()),
        gpu_models=sorted({r.gpu_model for r in rates.list_rates(uow())}),
        risk_tiers=[t.value for t in RiskTier],
        declarations=applications.DECLARATIONS,
    )


@router.get("/applications", response_class=HTMLResponse)
def list_applications(request: Request, runtime: RuntimeDep, user: ApplicantDep) -> HTMLResponse:
    return page(
        request,
        "applicant/applications.html",
        title="Applications",
        applications=applications.list_applications(runtime.uow(), user.actor),
        schemes={s.id: s for s in schemes.list_schemes(runtime.uow())},
    )


@router.get("/apply", response_class=HTMLResponse)
def apply_start(request: Request, runtime: RuntimeDep, user: ApplicantDep) -> HTMLResponse:
    return application_form(request, runtime, "request", {"declarations": []}, {})


@router.post("/apply", response_class=HTMLResponse)
async def apply_step(request: Request, runtime: RuntimeDep, user: ApplicantDep) -> Response:
    """One form over several steps: earlier steps' answers travel as hidden fields, and a step
    is left only when its own fields are valid."""
    form = await request.form()
    values: dict[str, Any] = {k: forms.text(form, k) for k in FIELD_STEP if k != "declarations"}
    values["personal_data"] = forms.checked(form, "personal_data")
    values["declarations"] = [str(v) for v in form.getlist("declarations")]
    step = forms.text(form, "step")
    names = [name for name, _ in STEPS]
    if step not in names:
        step = "request"
    here = names.index(step)
    if forms.text(form, "action") == "back":
        return application_form(request, runtime, names[max(0, here - 1)], values, {})
    app_request, errors = read_application(form)
    # stay on the first step (up to this one) that still has a problem
    for name in names[: here + 1]:
        step_errors = {f: m for f, m in errors.items() if FIELD_STEP.get(f) == name}
        if step_errors:
            return application_form(request, runtime, name, values, step_errors, 422)
    if step != "review":
        return application_form(request, runtime, names[here + 1], values, {})
    try:
        created = applications.submit_application(runtime.uow(), user.actor, app_request)
    except ValidationError as exc:
        fields = exc.fields or {"title": exc.detail}
        first = min((names.index(FIELD_STEP.get(f, "request")) for f in fields), default=0)
        return application_form(request, runtime, names[first], values, fields, 422)
    return RedirectResponse(f"/applications/{created.id}?submitted=1", status_code=303)


@router.get("/applications/{application_id}", response_class=HTMLResponse)
def application_detail(
    request: Request, application_id: int, runtime: RuntimeDep, user: ApplicantDep
) -> HTMLResponse:
    application = applications.get_application(runtime.uow(), user.actor, application_id)
    decided = decisions.get_decision(runtime.uow(), user.actor, application_id)
    return page(
        request,
        "applicant/application.html",
        title=application.title,
        application=application,
        scheme=schemes.get_scheme(runtime.uow(), application.scheme_id),
        decision=decided[0] if decided else None,
        allocation_id=decided[1] if decided else None,
        declarations=applications.DECLARATIONS,
        submitted=request.query_params.get("submitted") == "1",
    )


# -- allocations -------------------------------------------------------------------------------


@router.get("/allocations/{allocation_id}", response_class=HTMLResponse)
def allocation_detail(
    request: Request, allocation_id: int, runtime: RuntimeDep, user: ApplicantDep
) -> HTMLResponse:
    balance = allocations.get_allocation(runtime.uow(), user.actor, allocation_id)
    burn = usage.allocation_burn(runtime.uow(), user.actor, allocation_id, utcnow())
    chart = {
        "type": "line",
        "data": {
            "labels": [p.day.isoformat() for p in burn.points],
            "datasets": [
                {
                    "label": "GPU-hours used",
                    "data": [round(p.used_gpu_hours, 2) for p in burn.points],
                    "borderColor": "#0b6bcb",
                    "fill": False,
                },
                {
                    "label": "Granted",
                    "data": [burn.granted_gpu_hours for _ in burn.points],
                    "borderColor": "#9aa4b2",
                    "borderDash": [6, 4],
                    "pointRadius": 0,
                },
            ],
        },
    }
    return page(
        request,
        "applicant/allocation.html",
        title=balance.allocation.name,
        b=balance,
        burn=burn,
        chart=chart,
        recent_jobs=jobs.list_jobs(
            runtime.uow(), user.actor, allocation_id=allocation_id, limit=20
        ),
    )


# -- jobs --------------------------------------------------------------------------------------


def jobs_context(runtime: RuntimeDep, user: PortalUser) -> dict[str, Any]:
    positions = runtime.controller.positions()
    listed = jobs.list_jobs(runtime.uow(), user.actor, limit=100)
    return {"jobs": listed, "positions": positions}


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, runtime: RuntimeDep, user: ApplicantDep) -> HTMLResponse:
    return jobs_form(request, runtime, user, {"gpus": "1", "time_limit_min": "60"}, {})


def jobs_form(
    request: Request,
    runtime: RuntimeDep,
    user: PortalUser,
    values: dict[str, str],
    errors: dict[str, str],
    status_code: int = 200,
) -> HTMLResponse:
    """The jobs page: the submit form (for the allocations open to jobs) and the live list."""
    return page(
        request,
        "applicant/jobs.html",
        status_code=status_code,
        title="Jobs",
        allocations=[
            b
            for b in allocations.list_allocations(runtime.uow(), user.actor)
            if b.status == "active"
        ],
        values=values,
        errors=errors,
        **jobs_context(runtime, user),
    )


@router.get("/jobs/table", response_class=HTMLResponse)
def jobs_table(request: Request, runtime: RuntimeDep, user: ApplicantDep) -> HTMLResponse:
    """The live part of the jobs page, polled by htmx."""
    return page(request, "applicant/_jobs_table.html", **jobs_context(runtime, user))


@router.post("/jobs", response_class=HTMLResponse)
async def submit_job(request: Request, runtime: RuntimeDep, user: ApplicantDep) -> Response:
    form = await request.form()
    errors: dict[str, str] = {}
    values = {
        k: forms.text(form, k)
        for k in ("allocation_id", "name", "command", "gpus", "time_limit_min")
    }
    allocation_id = forms.whole_number(form, "allocation_id", errors, "The allocation")
    gpus = forms.whole_number(form, "gpus", errors, "GPUs")
    minutes = forms.whole_number(form, "time_limit_min", errors, "The time limit")
    try:
        argv = shlex.split(values["command"])
    except ValueError as exc:
        errors["command"] = f"the command cannot be read: {exc}"
        argv = []
    if not argv and "command" not in errors:
        errors["command"] = "a command to run is required"
    if not errors:
        try:
            job = jobs.submit_job(
                runtime.uow(),
                user.actor,
                jobs.JobRequest(
                    allocation_id=allocation_id,
                    argv=argv,
                    gpus=gpus,
                    time_limit_s=minutes * 60,
                    name=values["name"],
                ),
            )
            return RedirectResponse(f"/jobs/{job.id}", status_code=303)
        except PermissionDenied:
            raise  # another organisation's allocation: a 403, as its pages are
        except DomainError as exc:
            errors["form"] = exc.detail
    return jobs_form(request, runtime, user, values, errors, 422)


def job_context(runtime: RuntimeDep, user: PortalUser, job_id: int) -> dict[str, Any]:
    job, why = jobs.explain_job(runtime.uow(), user.actor, job_id, runtime.controller.explain)
    log = runtime.backend.log_path
    return {
        "job": job,
        "why": why,
        "stdout": jobs.job_log(runtime.uow(), user.actor, job_id, "stdout", log, 16_000),
        "stderr": jobs.job_log(runtime.uow(), user.actor, job_id, "stderr", log, 8_000),
    }


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_detail(
    request: Request, job_id: int, runtime: RuntimeDep, user: ApplicantDep
) -> HTMLResponse:
    context = job_context(runtime, user, job_id)
    return page(request, "applicant/job.html", title=context["job"].name, **context)


@router.get("/jobs/{job_id}/live", response_class=HTMLResponse)
def job_live(
    request: Request, job_id: int, runtime: RuntimeDep, user: ApplicantDep
) -> HTMLResponse:
    return page(request, "applicant/_job_live.html", **job_context(runtime, user, job_id))


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: int, runtime: RuntimeDep, user: ApplicantDep) -> Response:
    jobs.cancel_job(runtime.uow(), user.actor, job_id)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


# -- invoices ----------------------------------------------------------------------------------


def current_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


@router.get("/invoices", response_class=HTMLResponse)
def invoice_page(
    request: Request, runtime: RuntimeDep, user: ApplicantDep, month: str | None = None
) -> HTMLResponse:
    month = month or current_month()
    invoice = invoices.monthly_invoice(runtime.uow(), user.actor, org_id_of(user), month)
    return page(request, "applicant/invoice.html", title=f"Invoice {month}", invoice=invoice)


@router.get("/invoices/{month}.csv")
def invoice_csv(month: str, runtime: RuntimeDep, user: ApplicantDep) -> Response:
    invoice = invoices.monthly_invoice(runtime.uow(), user.actor, org_id_of(user), month)
    return PlainTextResponse(
        invoices.invoice_csv(invoice),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{invoice.number}.csv"'},
    )


@router.get("/invoices/{month}.pdf")
def invoice_pdf_download(month: str, runtime: RuntimeDep, user: ApplicantDep) -> Response:
    invoice = invoices.monthly_invoice(runtime.uow(), user.actor, org_id_of(user), month)
    return Response(
        invoice_pdf(invoice),
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{invoice.number}.pdf"'},
    )


# -- progress reports --------------------------------------------------------------------------


def reports_form(
    request: Request,
    runtime: RuntimeDep,
    user: PortalUser,
    open_id: int | None = None,
    summary: str = "",
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """The reports page; `open_id` is the report whose form comes back with its error."""
    return page(
        request,
        "applicant/reports.html",
        status_code=status_code,
        title="Progress reports",
        reports=progress.list_reports(runtime.uow(), user.actor, utcnow()),
        errors=errors or {},
        open_id=open_id,
        summary=summary,
    )


@router.get("/reports", response_class=HTMLResponse)
def reports_page(request: Request, runtime: RuntimeDep, user: ApplicantDep) -> HTMLResponse:
    return reports_form(request, runtime, user)


@router.post("/reports/{report_id}", response_class=HTMLResponse)
def submit_report(
    request: Request,
    report_id: int,
    runtime: RuntimeDep,
    user: ApplicantDep,
    summary: Annotated[str, Form()] = "",
) -> Response:
    try:
        progress.submit_report(runtime.uow(), user.actor, report_id, summary, utcnow())
    except ValidationError as exc:
        return reports_form(
            request, runtime, user, report_id, summary, {"summary": exc.detail}, 422
        )
    return RedirectResponse("/reports", status_code=303)
