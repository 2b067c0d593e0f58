"""What the database benchmarks start from: a database that exists for one run, and a centre
with one open award in it, seeded through the services."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from aisc.services import accounts, applications, decisions, rates, reviews, schemes
from aisc.services.applications import ApplicationRequest, GovernanceAssessment
from aisc.services.context import SYSTEM, Actor
from aisc.store.db import make_engine, make_session_factory
from aisc.store.migrate import upgrade
from aisc.store.uow import UnitOfWork


def throwaway_database(
    url: str | None, folder: Path, prefix: str = "aisc_bench"
) -> tuple[str, Callable[[], None]]:
    """A new database on the PostgreSQL server `url` names, or a SQLite file in `folder`: its
    URL, and how to drop it."""
    if url and make_url(url).get_backend_name() == "postgresql":
        import psycopg

        admin = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

        def drop() -> None:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        return make_url(url).set(database=name).render_as_string(hide_password=False), drop
    return f"sqlite:///{folder}/{prefix}.db", lambda: None


def open_database(url: str) -> tuple[Engine, Callable[[], UnitOfWork]]:
    """The database at `url` migrated to the newest schema: its engine (the caller disposes
    of it) and a unit-of-work factory on it."""
    upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    return engine, lambda: UnitOfWork(factory)


def seed_centre(new_uow: Callable[[], UnitOfWork]) -> tuple[int, int, Actor]:
    """An operator, a grantee and an award of ten million GPU-hours, open from yesterday:
    the allocation's id, the grantee's user id and the operator."""
    today = datetime.now(UTC).date()
    op = accounts.actor_for(
        accounts.create_user(new_uow(), SYSTEM, "Op", "op@bench.test", "operator")
    )
    org = accounts.create_organisation(new_uow(), op, "Bench University", "university")
    grantee = accounts.create_user(new_uow(), op, "Grantee", "g@bench.test", "applicant", org.id)
    reviewer = accounts.actor_for(
        accounts.create_user(new_uow(), op, "Rev", "r@bench.test", "reviewer")
    )
    scheme = schemes.create_scheme(
        new_uow(),
        op,
        "Bench",
        3_000_000_000_00,
        today - timedelta(days=30),
        today + timedelta(days=3 * 365),
        {"merit": 100},
        min_reviews=1,
    )
    rates.set_rate(new_uow(), op, "H800", 3000)
    application = applications.submit_application(
        new_uow(),
        accounts.actor_for(grantee),
        ApplicationRequest(
            scheme.id,
            "Bench",
            "H800",
            10_000_000,
            today - timedelta(days=1),
            today + timedelta(days=300),
            "A long enough justification of the compute request.",
            GovernanceAssessment("research", False, "minimal", "people check outputs"),
        ),
    )
    reviews.submit_review(new_uow(), reviewer, application.id, {"merit": 8}, "approve")
    allocation = decisions.approve(
        new_uow(),
        op,
        application.id,
        decisions.Approval(10_000_000, today - timedelta(days=1), today + timedelta(days=300)),
    )
    return allocation.id, grantee.id, op
