"""The database schema. Alembic's first migration creates exactly this."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from aisc.store.types import UTCDateTime, utcnow

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Organisation(Base):
    __tablename__ = "organisations"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    category: Mapped[str] = mapped_column(String(40))
    sector: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    org_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # the Unix user whose Slurm associations aisc makes in the accounts of this user's awards
    slurm_user: Mapped[str | None] = mapped_column(String(64), unique=True, index=True)
    # argon2 hash for the web portal's sign-in; None: the user signs in with API tokens only
    password_hash: Mapped[str | None] = mapped_column(String(200))


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Scheme(Base):
    __tablename__ = "schemes"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    fund_total_cents: Mapped[int] = mapped_column(BigInteger)
    starts_on: Mapped[date] = mapped_column(Date)
    ends_on: Mapped[date] = mapped_column(Date)
    default_rate_bp: Mapped[int] = mapped_column(Integer)
    max_rate_bp: Mapped[int] = mapped_column(Integer)
    eligible_categories: Mapped[list[str]] = mapped_column(JSON)
    rubric: Mapped[dict[str, int]] = mapped_column(JSON)
    min_reviews: Mapped[int] = mapped_column(Integer)
    # grantees report progress this often (and once at the end of every award)
    report_every_months: Mapped[int] = mapped_column(Integer, default=3, server_default="3")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GpuRate(Base):
    """A list price per GPU-hour, in force from `effective_from` until the next one."""

    __tablename__ = "gpu_rates"
    __table_args__ = (UniqueConstraint("gpu_model", "effective_from"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    gpu_model: Mapped[str] = mapped_column(String(40), index=True)
    cents_per_gpu_hour: Mapped[int] = mapped_column(BigInteger)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Application(Base):
    __tablename__ = "applications"
    id: Mapped[int] = mapped_column(primary_key=True)
    scheme_id: Mapped[int] = mapped_column(ForeignKey("schemes.id"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    applicant_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    title: Mapped[str] = mapped_column(String(300))
    gpu_model: Mapped[str] = mapped_column(String(40))
    gpu_hours: Mapped[int] = mapped_column(BigInteger)
    starts_on: Mapped[date] = mapped_column(Date)
    ends_on: Mapped[date] = mapped_column(Date)
    justification: Mapped[str] = mapped_column(Text)
    intended_use: Mapped[str] = mapped_column(Text)
    personal_data: Mapped[bool] = mapped_column(Boolean)
    personal_data_details: Mapped[str] = mapped_column(Text, default="")
    risk_tier: Mapped[str] = mapped_column(String(20))
    human_oversight: Mapped[str] = mapped_column(Text)
    # the declarations the applicant made (keys of services.applications.DECLARATIONS)
    declarations: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(20), index=True)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ConflictDeclaration(Base):
    __tablename__ = "conflict_declarations"
    __table_args__ = (UniqueConstraint("application_id", "reviewer_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    application_id: Mapped[int] = mapped_column(ForeignKey("applications.id"))
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    reason: Mapped[str] = mapped_column(Text)
    declared_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReviewAssignment(Base):
    """An operator asks a reviewer to review an application."""

    __tablename__ = "review_assignments"
    __table_args__ = (UniqueConstraint("application_id", "reviewer_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    application_id: Mapped[int] = mapped_column(ForeignKey("applications.id"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    assigned_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Review(Base):
    __tablename__ = "reviews"
    __table_args__ = (UniqueConstraint("application_id", "reviewer_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    application_id: Mapped[int] = mapped_column(ForeignKey("applications.id"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    scores: Mapped[dict[str, int]] = mapped_column(JSON)
    weighted_score: Mapped[float] = mapped_column()
    recommendation: Mapped[str] = mapped_column(String(20))
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Decision(Base):
    __tablename__ = "decisions"
    id: Mapped[int] = mapped_column(primary_key=True)
    application_id: Mapped[int] = mapped_column(ForeignKey("applications.id"), unique=True)
    decided_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    outcome: Mapped[str] = mapped_column(String(20))
    reasons: Mapped[str] = mapped_column(Text, default="")
    conditions: Mapped[str] = mapped_column(Text, default="")
    rate_reason: Mapped[str] = mapped_column(Text, default="")
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Allocation(Base):
    """An award turned quota. Its balances live in the ledger; this row holds its terms."""

    __tablename__ = "allocations"
    id: Mapped[int] = mapped_column(primary_key=True)
    application_id: Mapped[int] = mapped_column(ForeignKey("applications.id"), unique=True)
    scheme_id: Mapped[int] = mapped_column(ForeignKey("schemes.id"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    name: Mapped[str] = mapped_column(String(300))
    gpu_model: Mapped[str] = mapped_column(String(40))
    gpu_hours: Mapped[int] = mapped_column(BigInteger)
    rate_bp: Mapped[int] = mapped_column(Integer)
    price_cents_per_gpu_hour: Mapped[int] = mapped_column(BigInteger)
    commitment_cents: Mapped[int] = mapped_column(BigInteger)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    conditions: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), default="active")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Node(Base):
    """The executor's inventory, refreshed from configuration when the controller starts."""

    __tablename__ = "nodes"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    gpu_model: Mapped[str] = mapped_column(String(40))
    gpus: Mapped[int] = mapped_column(Integer)
    gpu_indices: Mapped[list[int]] = mapped_column(JSON)
    backend: Mapped[str] = mapped_column(String(20), default="local")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    allocation_id: Mapped[int] = mapped_column(ForeignKey("allocations.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(200))
    argv: Mapped[list[str]] = mapped_column(JSON)
    gpus: Mapped[int] = mapped_column(Integer)
    gpu_model: Mapped[str] = mapped_column(String(40))
    time_limit_s: Mapped[int] = mapped_column(Integer)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(20), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    node: Mapped[str | None] = mapped_column(String(100))
    gpu_indices: Mapped[list[int] | None] = mapped_column(JSON)
    # every node the job holds and its GPU indices there: [{"node": "node1", "gpus": [0, 1]}]
    placement: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    borrowed: Mapped[bool] = mapped_column(Boolean, default=False)
    preemptions: Mapped[int] = mapped_column(Integer, default=0)
    backend: Mapped[str | None] = mapped_column(String(20))
    backend_ref: Mapped[str | None] = mapped_column(Text)
    reserved_gpu_seconds: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_subsidy_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)


class JobCharge(Base):
    """One row per settled job; the unique job_id is what makes a job chargeable only once."""

    __tablename__ = "job_charges"
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), unique=True)
    allocation_id: Mapped[int] = mapped_column(ForeignKey("allocations.id"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    gpu_seconds: Mapped[int] = mapped_column(BigInteger)
    charge_cents: Mapped[int] = mapped_column(BigInteger)
    subsidy_cents: Mapped[int] = mapped_column(BigInteger)
    copay_cents: Mapped[int] = mapped_column(BigInteger)
    rate_bp: Mapped[int] = mapped_column(Integer)
    price_detail: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    usage_started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    usage_ended_at: Mapped[datetime] = mapped_column(UTCDateTime)
    settled_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ledger_seq: Mapped[int] = mapped_column(BigInteger)


class LedgerTransaction(Base):
    """Append-only. refs and postings are stored as the exact canonical text that was hashed."""

    __tablename__ = "ledger_transactions"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    created_at: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(20), index=True)
    memo: Mapped[str] = mapped_column(Text)
    refs: Mapped[str] = mapped_column(Text)
    postings: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class LedgerBalance(Base):
    """Running balance per account and unit, kept in the same transaction as each append."""

    __tablename__ = "ledger_balances"
    account: Mapped[str] = mapped_column(String(200), primary_key=True)
    unit: Mapped[str] = mapped_column(String(10), primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)


class LedgerHead(Base):
    """One row. Locking it serialises appends, so the chain and every balance check stay exact."""

    __tablename__ = "ledger_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hash: Mapped[str] = mapped_column(String(64))


class WebSession(Base):
    """A signed-in browser. Only the hash of the cookie's value is stored, as for API tokens."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SignInFailure(Base):
    """Failed password sign-ins, counted per email to slow down guessing."""

    __tablename__ = "sign_in_failures"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Notification(Base):
    """A message to one user, shown in the portal and mailed (an outbox: mailed after commit).

    `key` makes each event notify once, however often the periodic checks run.
    """

    __tablename__ = "notifications"
    __table_args__ = (UniqueConstraint("user_id", "key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    key: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    link: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    emailed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    email_attempts: Mapped[int] = mapped_column(Integer, default=0)
    email_error: Mapped[str] = mapped_column(Text, default="")


class ProgressReport(Base):
    """A progress report an award's conditions call for: due on a date, then submitted."""

    __tablename__ = "progress_reports"
    __table_args__ = (UniqueConstraint("allocation_id", "due_on"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    allocation_id: Mapped[int] = mapped_column(ForeignKey("allocations.id"), index=True)
    due_on: Mapped[date] = mapped_column(Date)
    final: Mapped[bool] = mapped_column(Boolean, default=False)
    summary: Mapped[str] = mapped_column(Text, default="")
    submitted_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
