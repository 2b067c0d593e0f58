"""Applications for compute: the request, its justification and an AI-governance self-assessment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import select

from aisc.domain.errors import NotFound, PermissionDenied, ValidationError
from aisc.domain.model import ApplicationStatus, OrgCategory, RiskTier, Role
from aisc.services.context import Actor
from aisc.services.rates import require_model
from aisc.store.tables import Application, Organisation, Scheme
from aisc.store.uow import UnitOfWork

MIN_JUSTIFICATION = 20
# what an applicant may declare; the portal asks for all of them
DECLARATIONS = {
    "accurate": "The information in this application is accurate and complete.",
    "acceptable_use": "We will use the compute only for the purpose described, under the "
    "centre's acceptable use policy and the award's conditions.",
    "publication": "The award's title, organisation and amount may be published by the funder.",
}


@dataclass(frozen=True)
class GovernanceAssessment:
    intended_use: str
    personal_data: bool
    risk_tier: str
    human_oversight: str
    personal_data_details: str = ""


@dataclass(frozen=True)
class ApplicationRequest:
    scheme_id: int
    title: str
    gpu_model: str
    gpu_hours: int
    starts_on: date
    ends_on: date
    justification: str
    governance: GovernanceAssessment
    declarations: tuple[str, ...] = ()


def submit_application(uow: UnitOfWork, actor: Actor, req: ApplicationRequest) -> Application:
    actor.require(Role.APPLICANT)
    if actor.org_id is None:
        raise PermissionDenied("you must belong to an organisation to apply")
    problems = check_request(req)
    if problems:
        raise ValidationError("; ".join(problems.values()), fields=problems)
    with uow:
        scheme = uow.session.get(Scheme, req.scheme_id)
        if scheme is None:
            raise NotFound(f"scheme {req.scheme_id} does not exist")
        org = uow.session.get(Organisation, actor.org_id)
        assert org is not None
        if org.category not in scheme.eligible_categories:
            message = (
                f"{OrgCategory(org.category).value} organisations are not eligible for "
                f"{scheme.name} (eligible: {', '.join(scheme.eligible_categories)})"
            )
            raise ValidationError(message, fields={"scheme_id": message})
        if req.starts_on < scheme.starts_on or req.ends_on > scheme.ends_on:
            message = (
                f"the requested period must fall within the scheme's "
                f"{scheme.starts_on} to {scheme.ends_on}"
            )
            raise ValidationError(message, fields={"starts_on": message})
        try:
            model = require_model(uow.session, req.gpu_model)
        except ValidationError as exc:
            raise ValidationError(exc.detail, fields={"gpu_model": exc.detail}) from None
        g = req.governance
        application = Application(
            scheme_id=scheme.id,
            org_id=org.id,
            applicant_id=actor.user_id,
            title=req.title.strip(),
            gpu_model=model,
            gpu_hours=req.gpu_hours,
            starts_on=req.starts_on,
            ends_on=req.ends_on,
            justification=req.justification.strip(),
            intended_use=g.intended_use.strip(),
            personal_data=g.personal_data,
            personal_data_details=g.personal_data_details.strip(),
            risk_tier=g.risk_tier,
            human_oversight=g.human_oversight.strip(),
            declarations=sorted(set(req.declarations)),
            status=ApplicationStatus.SUBMITTED.value,
        )
        uow.session.add(application)
        uow.commit()
        return application


def check_request(req: ApplicationRequest) -> dict[str, str]:
    """Each problem with the request, keyed by the field it belongs to."""
    problems = {}
    if not req.title.strip():
        problems["title"] = "a title is required"
    if req.gpu_hours <= 0:
        problems["gpu_hours"] = "requested GPU-hours must be positive"
    if req.ends_on <= req.starts_on:
        problems["ends_on"] = "the period must end after it starts"
    if len(req.justification.strip()) < MIN_JUSTIFICATION:
        problems["justification"] = (
            f"justify the compute request (model size, data, batch size, precision, training "
            f"or inference) in at least {MIN_JUSTIFICATION} characters"
        )
    g = req.governance
    if not g.intended_use.strip():
        problems["intended_use"] = "the intended use is required"
    if not g.human_oversight.strip():
        problems["human_oversight"] = "describe the human oversight"
    if g.risk_tier not in {t.value for t in RiskTier}:
        problems["risk_tier"] = f"risk tier must be one of {', '.join(t.value for t in RiskTier)}"
    if g.personal_data and not g.personal_data_details.strip():
        problems["personal_data_details"] = (
            "say what personal data is involved and how it is protected"
        )
    unknown = sorted(set(req.declarations) - set(DECLARATIONS))
    if unknown:
        problems["declarations"] = f"unknown declarations: {', '.join(unknown)}"
    return problems


def list_applications(
    uow: UnitOfWork, actor: Actor, status: str | None = None
) -> list[Application]:
    with uow:
        query = select(Application).order_by(Application.id)
        if actor.role == Role.APPLICANT:
            query = query.where(Application.org_id == actor.org_id)
        if status:
            query = query.where(Application.status == status)
        return list(uow.session.scalars(query))


def get_application(uow: UnitOfWork, actor: Actor, application_id: int) -> Application:
    with uow:
        application = uow.session.get(Application, application_id)
        if application is None:
            raise NotFound(f"application {application_id} does not exist")
        actor.require_org(application.org_id)
        return application
