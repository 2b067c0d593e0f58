"""Build a small centre through the real services, so tests start from states the rules allow."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from aisc.backends.inventory import Node as InventoryNode
from aisc.domain.model import JobState
from aisc.services import accounts, applications, decisions, jobs, rates, reviews, schemes
from aisc.services.applications import ApplicationRequest, GovernanceAssessment
from aisc.services.context import SYSTEM, Actor, utcnow
from aisc.services.controller import sync_inventory
from aisc.services.metering import reserve_job, settle_job
from aisc.store.tables import Allocation, Job, JobCharge
from aisc.store.uow import UnitOfWork

UowFactory = Callable[[], UnitOfWork]

RUBRIC = {"alignment": 25, "reasonableness": 20, "merit": 25, "team": 15, "impact": 15}
PRICE_CENTS = 3600  # HK$36 per GPU-hour: one GPU-second costs exactly one cent


@dataclass
class Centre:
    uow: UowFactory
    scheme_id: int
    operator: Actor
    funder: Actor
    reviewers: list[Actor]
    orgs: dict[str, int] = field(default_factory=dict)
    applicants: dict[str, Actor] = field(default_factory=dict)


def build_centre(
    uow: UowFactory,
    fund_cents: int = 1_000_000_00,
    nodes: str = "2x8xH800",
    today: date | None = None,
    min_reviews: int = 2,
) -> Centre:
    today = today or datetime.now().date()
    op_user = accounts.create_user(uow(), SYSTEM, "Olive Operator", "ops@centre.test", "operator")
    operator = accounts.actor_for(op_user)
    funder = accounts.actor_for(
        accounts.create_user(uow(), operator, "Fay Funder", "fund@gov.test", "funder")
    )
    revs = [
        accounts.actor_for(
            accounts.create_user(uow(), operator, f"Reviewer {i}", f"r{i}@panel.test", "reviewer")
        )
        for i in range(3)
    ]
    scheme = schemes.create_scheme(
        uow(),
        operator,
        "Test Scheme",
        fund_cents,
        today - timedelta(days=30),
        today + timedelta(days=365),
        RUBRIC,
        min_reviews=min_reviews,
    )
    rates.set_rate(uow(), operator, "H800", PRICE_CENTS)
    inventory = []
    count, gpus, model = nodes.split("x")
    for i in range(int(count)):
        inventory.append(InventoryNode(f"node{i + 1}", model, int(gpus), tuple(range(int(gpus)))))
    sync_inventory(uow(), inventory, "local")
    return Centre(uow, scheme.id, operator, funder, revs)


def add_org(centre: Centre, name: str, category: str = "university") -> Actor:
    org = accounts.create_organisation(centre.uow(), centre.operator, name, category)
    user = accounts.create_user(
        centre.uow(),
        centre.operator,
        f"{name} Lead",
        f"lead@{name.lower().replace(' ', '')}.test",
        "applicant",
        org.id,
    )
    centre.orgs[name] = org.id
    centre.applicants[name] = accounts.actor_for(user)
    return centre.applicants[name]


def application_request(
    scheme_id: int, gpu_hours: int = 100, **overrides: object
) -> ApplicationRequest:
    today = datetime.now().date()
    fields: dict[str, object] = {
        "scheme_id": scheme_id,
        "title": "Cantonese speech model",
        "gpu_model": "H800",
        "gpu_hours": gpu_hours,
        "starts_on": today - timedelta(days=1),
        "ends_on": today + timedelta(days=90),
        "justification": "Fine-tune a 7B model on 2,000 hours of speech in bf16, batch 256.",
        "governance": GovernanceAssessment(
            intended_use="Public-service transcription",
            personal_data=False,
            risk_tier="limited",
            human_oversight="Transcripts are checked by staff before use.",
        ),
    }
    fields.update(overrides)
    return ApplicationRequest(**fields)  # type: ignore[arg-type]


def award(
    centre: Centre,
    org_name: str,
    gpu_hours: int = 100,
    rate_bp: int | None = None,
    reason: str = "",
) -> int:
    """Apply, review twice, approve: returns the allocation id."""
    applicant = centre.applicants.get(org_name) or add_org(centre, org_name)
    app = applications.submit_application(
        centre.uow(), applicant, application_request(centre.scheme_id, gpu_hours)
    )
    for reviewer in centre.reviewers[:2]:
        reviews.submit_review(
            centre.uow(), reviewer, app.id, {k: 7 for k in RUBRIC}, "approve", "sound plan"
        )
    today = datetime.now().date()
    allocation = decisions.approve(
        centre.uow(),
        centre.operator,
        app.id,
        decisions.Approval(
            gpu_hours=gpu_hours,
            starts_on=today - timedelta(days=1),
            ends_on=today + timedelta(days=90),
            rate_bp=rate_bp,
            rate_reason=reason,
        ),
    )
    return allocation.id


def run_to_completion(centre: Centre, job_id: int, start: datetime, seconds: int) -> JobCharge:
    """Start a queued job at `start` (reserving its quota) and settle it `seconds` later, as the
    controller does."""
    with centre.uow() as uow:
        uow.ledger.lock()
        job = uow.session.get(Job, job_id)
        assert job is not None
        allocation = uow.session.get(Allocation, job.allocation_id)
        assert allocation is not None
        reserve_job(uow, job, allocation, start)
        job.state, job.started_at = JobState.RUNNING.value, start
        uow.commit()
    with centre.uow() as uow:
        uow.ledger.lock()
        job = uow.session.get(Job, job_id)
        assert job is not None
        allocation = uow.session.get(Allocation, job.allocation_id)
        charge = settle_job(uow, job, allocation, start + timedelta(seconds=seconds))
        assert charge is not None
        job.state, job.ended_at = JobState.COMPLETED.value, start + timedelta(seconds=seconds)
        uow.commit()
        return charge


def charged_job(
    centre: Centre, org: str, allocation_id: int, gpus: int, seconds: int, limit_s: int = 3600
) -> JobCharge:
    """Submit a job for `org` and run it now for `seconds`: the ledger records its use."""
    request = jobs.JobRequest(allocation_id, ["python", "train.py"], gpus, limit_s)
    job_id = jobs.submit_job(centre.uow(), centre.applicants[org], request).id
    return run_to_completion(centre, job_id, utcnow(), seconds)


def application_body(scheme_id: int, **overrides: object) -> dict[str, Any]:
    """An application as the API takes it (POST /api/v1/applications), starting today."""
    today = date.today()
    body: dict[str, Any] = {
        "scheme_id": scheme_id,
        "title": "Cantonese LLM",
        "gpu_model": "H800",
        "gpu_hours": 1000,
        "starts_on": str(today),
        "ends_on": str(today + timedelta(days=90)),
        "justification": "Continue pre-training a 7B model on 200B tokens in bf16, batch 512.",
        "governance": {
            "intended_use": "Chat assistant for public services",
            "personal_data": False,
            "risk_tier": "limited",
            "human_oversight": "Staff review every answer before release.",
        },
    }
    body.update(overrides)
    return body
