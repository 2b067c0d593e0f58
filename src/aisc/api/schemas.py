"""Request and response bodies. Money travels as integer cents plus a formatted HKD string;
rates as decimal strings ("0.70"); amounts sent in are decimals, never floats."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from aisc.domain.money import format_cents, format_rate
from aisc.store.tables import Scheme


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# Ids are PostgreSQL `integer` columns: a larger number could never name a row, and would
# overflow the database's parameter instead of being refused.
MAX_ID = 2**31 - 1
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
# Money and GPU-hours stay far below the 64-bit columns, with room for sums and products.
MAX_HKD = Decimal(10**12)
MAX_GPU_HOURS = 100_000_000


def _unstorable(value: Any) -> str | None:
    """Why a value's text cannot be stored: PostgreSQL refuses NUL characters in text.
    (Lone surrogates never get this far: the JSON parser refuses them.)"""
    if isinstance(value, str):
        return "must not contain NUL characters (\\u0000)" if "\x00" in value else None
    if isinstance(value, dict):
        return next(filter(None, map(_unstorable, [*value.keys(), *value.values()])), None)
    if isinstance(value, list | tuple):
        return next(filter(None, map(_unstorable, value)), None)
    return None


def _storable_text(value: str) -> str:
    if (why := _unstorable(value)) is not None:
        raise ValueError(why)
    return value


# For text in query strings and paths; request bodies get the same check from `In`.
Text = Annotated[str, AfterValidator(_storable_text)]


class In(BaseModel):
    """A request body: every text in it, however nested, must be storable."""

    @field_validator("*")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        if (why := _unstorable(value)) is not None:
            raise ValueError(why)
        return value


def hkd(cents: int) -> str:
    return f"HK${format_cents(cents)}"


class ProblemDetails(BaseModel):
    """RFC 9457 problem details: the body of every error the API returns."""

    type: str = Field(description="The kind of problem, e.g. /problems/not-found")
    title: str = Field(description="The kind of problem in words, e.g. Not found")
    status: int = Field(description="The HTTP status code")
    detail: str = Field(description="What went wrong with this request, in one sentence")
    instance: str = Field(description="The request's path")
    errors: list[dict[str, str]] | None = Field(
        default=None, description="For invalid input: each field at fault and its message"
    )
    request_id: str | None = Field(
        default=None, description="The request's id (its X-Request-ID), as the server logs it"
    )


# -- organisations and users ------------------------------------------------------------------


class OrganisationIn(In):
    name: str = Field(min_length=1, max_length=200)
    category: str = Field(
        description="university, research_institute, startup, enterprise or government"
    )
    sector: str = Field(default="", max_length=100)


class OrganisationOut(Out):
    id: int
    name: str
    category: str
    sector: str


class UserIn(In):
    name: str = Field(min_length=1, max_length=200)
    email: str = Field(max_length=320)
    role: str = Field(description="applicant, reviewer, operator or funder")
    org_id: Id | None = None
    slurm_user: str | None = Field(
        default=None,
        max_length=64,
        description="Unix user name on the Slurm cluster: gets an association in the accounts "
        "of the organisation's awards",
    )


class UserOut(Out):
    id: int
    name: str
    email: str
    role: str
    org_id: int | None
    slurm_user: str | None


class TokenIn(In):
    label: str = Field(default="", max_length=100)


class TokenOut(BaseModel):
    token: str = Field(description="Shown once; only its hash is stored.")


class MeOut(BaseModel):
    user_id: int
    name: str
    role: str
    org_id: int | None


# -- schemes, fund, rates ---------------------------------------------------------------------


class SchemeIn(In):
    name: str = Field(min_length=1, max_length=200)
    fund_total_hkd: Decimal = Field(
        gt=0, le=MAX_HKD, description="The fund in HKD, e.g. 3000000000"
    )
    starts_on: date
    ends_on: date
    default_rate: Decimal = Field(default=Decimal("0.70"), ge=0, le=1)
    max_rate: Decimal = Field(default=Decimal("0.90"), ge=0, le=1)
    eligible_categories: list[str] = Field(
        default=["university", "research_institute", "startup", "enterprise"]
    )
    rubric: dict[str, int] = Field(description="Criterion -> weight; weights sum to 100")
    min_reviews: int = Field(default=2, ge=1, le=20)


class SchemeOut(Out):
    id: int
    name: str
    fund_total_cents: int
    starts_on: date
    ends_on: date
    default_rate: str
    max_rate: str
    eligible_categories: list[str]
    rubric: dict[str, int]
    min_reviews: int


def scheme_out(s: Scheme) -> SchemeOut:
    return SchemeOut(
        id=s.id,
        name=s.name,
        fund_total_cents=s.fund_total_cents,
        starts_on=s.starts_on,
        ends_on=s.ends_on,
        default_rate=format_rate(s.default_rate_bp),
        max_rate=format_rate(s.max_rate_bp),
        eligible_categories=s.eligible_categories,
        rubric=s.rubric,
        min_reviews=s.min_reviews,
    )


class FundOut(BaseModel):
    scheme_id: int
    name: str
    total_cents: int
    available_cents: int
    committed_cents: int
    reserved_cents: int
    spent_cents: int
    total: str
    available: str
    committed: str
    spent: str


class RateIn(In):
    gpu_model: str = Field(min_length=1, max_length=40)
    hkd_per_gpu_hour: Decimal = Field(gt=0, le=MAX_HKD)
    effective_from: datetime | None = Field(default=None, description="Default: now")


class RateOut(Out):
    id: int
    gpu_model: str
    cents_per_gpu_hour: int
    effective_from: datetime


# -- applications, reviews, decisions ---------------------------------------------------------


class GovernanceIn(In):
    intended_use: str = Field(min_length=1)
    personal_data: bool
    personal_data_details: str = ""
    risk_tier: Literal["minimal", "limited", "high"]
    human_oversight: str = Field(min_length=1)


class ApplicationIn(In):
    scheme_id: Id
    title: str = Field(min_length=1, max_length=300)
    gpu_model: str = Field(min_length=1, max_length=40)
    gpu_hours: int = Field(gt=0, le=MAX_GPU_HOURS)
    starts_on: date
    ends_on: date
    justification: str = Field(
        description="Model size, data, batch size, precision, training or inference"
    )
    governance: GovernanceIn


class ApplicationOut(Out):
    id: int
    scheme_id: int
    org_id: int
    applicant_id: int
    title: str
    gpu_model: str
    gpu_hours: int
    starts_on: date
    ends_on: date
    justification: str
    intended_use: str
    personal_data: bool
    personal_data_details: str
    risk_tier: str
    human_oversight: str
    status: str
    submitted_at: datetime


class ConflictIn(In):
    reason: str = Field(min_length=1)


class ConflictOut(Out):
    id: int
    application_id: int
    reviewer_id: int
    reason: str


class ReviewIn(In):
    scores: dict[str, int] = Field(description="Criterion -> score from 0 to 10")
    recommendation: Literal["approve", "reject", "revise"]
    comment: str = ""


class ReviewOut(Out):
    id: int
    application_id: int
    reviewer_id: int
    scores: dict[str, int]
    weighted_score: float
    recommendation: str
    comment: str


class DecisionIn(In):
    outcome: Literal["approve", "reject"]
    gpu_hours: int | None = Field(default=None, gt=0, le=MAX_GPU_HOURS)
    subsidy_rate: Decimal | None = Field(default=None, ge=0, le=1)
    rate_reason: str = ""
    starts_on: date | None = None
    ends_on: date | None = None
    conditions: str = ""
    reasons: str = Field(default="", description="Required for a rejection")


class DecisionOut(Out):
    id: int
    application_id: int
    outcome: str
    reasons: str
    conditions: str
    rate_reason: str
    decided_at: datetime
    allocation_id: int | None = None


# -- allocations, jobs, nodes -----------------------------------------------------------------


class AllocationOut(BaseModel):
    id: int
    application_id: int
    scheme_id: int
    org_id: int
    name: str
    gpu_model: str
    status: str
    subsidy_rate: str
    price_cents_per_gpu_hour: int
    starts_at: datetime
    ends_at: datetime
    conditions: str
    gpu_hours_granted: float
    gpu_hours_available: float
    gpu_hours_reserved: float
    gpu_hours_used: float
    subsidy_commitment_cents: int
    subsidy_committed_cents: int
    subsidy_reserved_cents: int
    subsidy_spent_cents: int


class JobIn(In):
    allocation_id: Id
    command: list[str] = Field(min_length=1, description="argv; run directly, not by a shell")
    gpus: int = Field(ge=1, le=4096)
    time_limit_s: int = Field(ge=1)
    name: str = Field(default="", max_length=200)
    priority: int = Field(default=0, ge=-10, le=10)


class JobOut(Out):
    id: int
    allocation_id: int
    user_id: int
    name: str
    argv: list[str]
    gpus: int
    gpu_model: str
    time_limit_s: int
    priority: int
    state: str
    reason: str
    submitted_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    exit_code: int | None
    node: str | None
    gpu_indices: list[int] | None
    placement: list[dict[str, Any]] | None
    borrowed: bool
    preemptions: int
    cancel_requested: bool


class QueueEntryOut(BaseModel):
    position: int | None
    job: JobOut


class PriorityFactorsOut(BaseModel):
    age: float
    fairshare: float
    size: float
    qos: float
    priority: float


class ExplanationOut(BaseModel):
    job_id: int
    state: str
    position: int | None = Field(description="Place among pending jobs in priority order")
    reason: str
    factors: PriorityFactorsOut | None
    reserved_start: datetime | None
    reserved_nodes: list[str]


class NodeOut(BaseModel):
    name: str
    gpu_model: str
    gpus: int
    busy_gpus: list[int]
    free_gpus: int
    jobs: list[int]


# -- invoices and ledger ----------------------------------------------------------------------


class InvoiceLineOut(Out):
    job_id: int
    job_name: str
    allocation_id: int
    allocation_name: str
    gpu_model: str
    gpus: int
    gpu_seconds: int
    started_at: datetime
    ended_at: datetime
    rate_bp: int
    charge_cents: int
    subsidy_cents: int
    copay_cents: int


class InvoiceOut(BaseModel):
    number: str
    org_id: int
    org_name: str
    month: str
    charge_cents: int
    subsidy_cents: int
    copay_cents: int
    charge: str
    subsidy: str
    copay: str
    lines: list[InvoiceLineOut]


class VerificationOut(BaseModel):
    ok: bool
    summary: str
    transactions: int
    head_hash: str
    first_bad_seq: int | None
    problems: list[str]


class HealthOut(BaseModel):
    status: str = Field(description="ok, or degraded while the executor cannot be reached")
    database: str
    backend: str = Field(description="local or slurm")
    backend_status: str = Field(description='"ok", or "degraded: why"')
    backend_last_contact: datetime | None = Field(
        default=None, description="When Slurm last answered (the Slurm backend only)."
    )
    controller: bool
