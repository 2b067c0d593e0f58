"""Applications, conflicts of interest, reviews and decisions."""

from __future__ import annotations

from fastapi import APIRouter, status

from aisc.api import problems
from aisc.api.deps import ActorDep, UowDep
from aisc.api.schemas import (
    ApplicationIn,
    ApplicationOut,
    ConflictIn,
    ConflictOut,
    DecisionIn,
    DecisionOut,
    IdPath,
    ReviewIn,
    ReviewOut,
    Text,
)
from aisc.domain.errors import NotFound, ValidationError
from aisc.domain.money import parse_rate
from aisc.services import applications, decisions, reviews
from aisc.services.applications import ApplicationRequest, GovernanceAssessment

router = APIRouter(tags=["applications"], responses=problems.RESPONSES)


@router.get("/applications", response_model=list[ApplicationOut])
def list_applications(
    uow: UowDep, actor: ActorDep, status: Text | None = None
) -> list[ApplicationOut]:
    return [
        ApplicationOut.model_validate(a) for a in applications.list_applications(uow, actor, status)
    ]


@router.post("/applications", response_model=ApplicationOut, status_code=status.HTTP_201_CREATED)
def submit_application(body: ApplicationIn, uow: UowDep, actor: ActorDep) -> ApplicationOut:
    g = body.governance
    request = ApplicationRequest(
        scheme_id=body.scheme_id,
        title=body.title,
        gpu_model=body.gpu_model,
        gpu_hours=body.gpu_hours,
        starts_on=body.starts_on,
        ends_on=body.ends_on,
        justification=body.justification,
        governance=GovernanceAssessment(
            intended_use=g.intended_use,
            personal_data=g.personal_data,
            personal_data_details=g.personal_data_details,
            risk_tier=g.risk_tier,
            human_oversight=g.human_oversight,
        ),
    )
    return ApplicationOut.model_validate(applications.submit_application(uow, actor, request))


@router.get("/applications/{application_id}", response_model=ApplicationOut)
def get_application(application_id: IdPath, uow: UowDep, actor: ActorDep) -> ApplicationOut:
    return ApplicationOut.model_validate(applications.get_application(uow, actor, application_id))


@router.post(
    "/applications/{application_id}/conflicts",
    response_model=ConflictOut,
    status_code=status.HTTP_201_CREATED,
)
def declare_conflict(
    application_id: IdPath, body: ConflictIn, uow: UowDep, actor: ActorDep
) -> ConflictOut:
    declaration = reviews.declare_conflict(uow, actor, application_id, body.reason)
    return ConflictOut.model_validate(declaration)


@router.get("/applications/{application_id}/reviews", response_model=list[ReviewOut])
def list_reviews(application_id: IdPath, uow: UowDep, actor: ActorDep) -> list[ReviewOut]:
    return [ReviewOut.model_validate(r) for r in reviews.list_reviews(uow, actor, application_id)]


@router.post(
    "/applications/{application_id}/reviews",
    response_model=ReviewOut,
    status_code=status.HTTP_201_CREATED,
)
def submit_review(
    application_id: IdPath, body: ReviewIn, uow: UowDep, actor: ActorDep
) -> ReviewOut:
    review = reviews.submit_review(
        uow, actor, application_id, body.scores, body.recommendation, body.comment
    )
    return ReviewOut.model_validate(review)


@router.post(
    "/applications/{application_id}/decision",
    response_model=DecisionOut,
    status_code=status.HTTP_201_CREATED,
)
def decide(application_id: IdPath, body: DecisionIn, uow: UowDep, actor: ActorDep) -> DecisionOut:
    if body.outcome == "reject":
        decisions.reject(uow, actor, application_id, body.reasons)
    else:
        if body.gpu_hours is None or body.starts_on is None or body.ends_on is None:
            raise ValidationError("an approval needs gpu_hours, starts_on and ends_on")
        decisions.approve(
            uow,
            actor,
            application_id,
            decisions.Approval(
                gpu_hours=body.gpu_hours,
                starts_on=body.starts_on,
                ends_on=body.ends_on,
                rate_bp=None if body.subsidy_rate is None else parse_rate(body.subsidy_rate),
                rate_reason=body.rate_reason,
                conditions=body.conditions,
            ),
        )
    return get_decision(application_id, uow, actor)


@router.get("/applications/{application_id}/decision", response_model=DecisionOut)
def get_decision(application_id: IdPath, uow: UowDep, actor: ActorDep) -> DecisionOut:
    found = decisions.get_decision(uow, actor, application_id)
    if found is None:
        raise NotFound(f"application {application_id} has no decision yet")
    decision, allocation_id = found
    out = DecisionOut.model_validate(decision)
    out.allocation_id = allocation_id
    return out
