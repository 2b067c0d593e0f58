"""The review committee's pages: the applications to review, conflicts of interest, and scoring
against the scheme's weighted rubric."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from aisc.api.deps import RuntimeDep
from aisc.domain.errors import Conflict, ConflictOfInterest, DomainError, ValidationError
from aisc.domain.model import SCORE_MAX, SCORE_MIN, ApplicationStatus
from aisc.services import applications, reviews, schemes
from aisc.web import forms
from aisc.web.render import page
from aisc.web.session import PortalUser, ReviewerDep

router = APIRouter(include_in_schema=False)


@router.get("/review", response_class=HTMLResponse)
def worklist(request: Request, runtime: RuntimeDep, user: ReviewerDep) -> HTMLResponse:
    items = reviews.reviewer_worklist(runtime.uow(), user.actor)
    declared = request.query_params.get("declared", "")
    return page(
        request,
        "reviewer/list.html",
        title="Applications to review",
        groups=[
            ("to-review", "To review", [i for i in items if i.state == reviews.TO_REVIEW]),
            ("reviewed", "Reviewed by you", [i for i in items if i.state == reviews.REVIEWED]),
            (
                "conflicts",
                "Conflicts of interest",
                [i for i in items if i.state == reviews.CONFLICTED],
            ),
        ],
        declared=declared if declared.isdigit() else "",
    )


def score_field(index: int) -> str:
    return f"score_{index}"


def review_page(
    request: Request,
    runtime: RuntimeDep,
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
    standing = reviews.reviewer_standing(uow(), actor, application_id)
    visible = reviews.reviews_visible_to(uow(), actor, application_id)
    refusal = standing.refusal
    is_open = application.status == ApplicationStatus.SUBMITTED.value
    if refusal:
        # whatever was posted, a conflicted reviewer is told why they cannot score, and only that
        flash, errors = refusal, {}
        status_code = 403 if status_code in (200, 422) else status_code
    criteria = [
        (score_field(i), name, weight) for i, (name, weight) in enumerate(scheme.rubric.items())
    ]
    return page(
        request,
        "reviewer/application.html",
        status_code=status_code,
        title=application.title,
        application=application,
        scheme=scheme,
        standing=standing,
        refused=refusal is not None,
        can_score=is_open and refusal is None and standing.own_review is None,
        can_declare=is_open and refusal is None and standing.own_review is None,
        is_open=is_open,
        criteria=criteria,
        reviews=visible,
        names=reviews.reviewer_names(uow(), actor, visible),
        recommendations=reviews.RECOMMENDATIONS,
        declarations=applications.DECLARATIONS,
        values=values or {},
        errors=errors or {},
        flash=flash,
        flash_ok=flash_ok,
        score_min=SCORE_MIN,
        score_max=SCORE_MAX,
    )


@router.get("/review/{application_id}", response_class=HTMLResponse)
def review_detail(
    request: Request, application_id: int, runtime: RuntimeDep, user: ReviewerDep
) -> HTMLResponse:
    recorded = request.query_params.get("recorded") == "1"
    return review_page(
        request,
        runtime,
        user,
        application_id,
        flash_ok="Your review was recorded. The other reviews are shown below." if recorded else "",
    )


def read_scores(form: FormData, rubric: dict[str, int], errors: dict[str, str]) -> dict[str, int]:
    scores: dict[str, int] = {}
    for index, name in enumerate(rubric):
        field = score_field(index)
        raw = forms.text(form, field)
        try:
            score = int(raw)
        except ValueError:
            errors[field] = (
                f"score {name} with a whole number from {SCORE_MIN} to {SCORE_MAX}"
                if raw
                else f"a score for {name} is required"
            )
            continue
        if not SCORE_MIN <= score <= SCORE_MAX:
            errors[field] = f"a score runs from {SCORE_MIN} to {SCORE_MAX}"
            continue
        scores[name] = score
    return scores


@router.post("/review/{application_id}", response_class=HTMLResponse)
async def submit_review(
    request: Request, application_id: int, runtime: RuntimeDep, user: ReviewerDep
) -> Response:
    form = await request.form()
    application = applications.get_application(runtime.uow(), user.actor, application_id)
    scheme = schemes.get_scheme(runtime.uow(), application.scheme_id)
    values: dict[str, Any] = {k: forms.text(form, k) for k in form if k != "csrf_token"}
    errors: dict[str, str] = {}
    scores = read_scores(form, scheme.rubric, errors)
    recommendation = forms.text(form, "recommendation")
    if recommendation not in reviews.RECOMMENDATIONS:
        errors["recommendation"] = "choose approve, reject or revise"
    comment = forms.text(form, "comment")
    if len(comment) > 10_000:
        errors["comment"] = "the comment takes at most 10,000 characters"

    def again(status_code: int, flash: str = "") -> HTMLResponse:
        return review_page(
            request,
            runtime,
            user,
            application_id,
            values=values,
            errors=errors,
            flash=flash,
            status_code=status_code,
        )

    if errors:
        return again(422, "Please correct the fields marked below.")
    try:
        reviews.submit_review(
            runtime.uow(), user.actor, application_id, scores, recommendation, comment
        )
    except ConflictOfInterest as exc:
        return again(403, exc.detail)
    except Conflict as exc:
        return again(409, exc.detail)
    except ValidationError as exc:
        return again(422, exc.detail)
    return RedirectResponse(f"/review/{application_id}?recorded=1", status_code=303)


@router.post("/review/{application_id}/conflict", response_class=HTMLResponse)
async def declare_conflict(
    request: Request, application_id: int, runtime: RuntimeDep, user: ReviewerDep
) -> Response:
    form = await request.form()
    reason = forms.text(form, "reason")
    try:
        reviews.declare_conflict(runtime.uow(), user.actor, application_id, reason)
    except ValidationError as exc:
        return review_page(
            request,
            runtime,
            user,
            application_id,
            values={"reason": reason},
            errors={"reason": exc.detail},
            status_code=422,
        )
    except DomainError as exc:
        status_code = 409 if isinstance(exc, Conflict) else 403
        return review_page(
            request,
            runtime,
            user,
            application_id,
            values={"reason": reason},
            flash=exc.detail,
            status_code=status_code,
        )
    return RedirectResponse(f"/review?declared={application_id}", status_code=303)
