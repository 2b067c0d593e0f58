"""DESIGN.md invariants 1-4 over random sequences of awards, submissions, starts and ends.

Each example builds a centre in a freshly reset database and drives the real services and
`services.metering` (inside a unit of work holding the ledger lock, as the controller does),
checking every invariant after every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, select

from aisc.domain.errors import InsufficientFunds, OverQuota
from aisc.domain.model import JobState
from aisc.ledger import accounts as acc
from aisc.services import allocations, audit, jobs, schemes
from aisc.services.context import utcnow
from aisc.services.metering import release_job, reserve_job, settle_job
from aisc.store.db import make_session_factory
from aisc.store.tables import Allocation, Job, JobCharge
from aisc.store.uow import UnitOfWork
from tests.builders import Centre, award, build_centre
from tests.conftest import reset_database

FUND_CENTS = 3_000_00  # HK$3,000: at HK$36/GPU-hour and 70%, room for about 119 GPU-hours
ORGS = ("HKU", "CUHK", "PolyU")


@dataclass
class Model:
    """What the test expects, kept beside the database."""

    allocations: list[int] = field(default_factory=list)
    queued: list[int] = field(default_factory=list)
    running: list[int] = field(default_factory=list)
    settled: dict[int, int] = field(default_factory=dict)  # job -> GPU-seconds billed
    used: dict[int, int] = field(default_factory=dict)  # allocation -> GPU-seconds billed


def pick(items: list[int], index: int) -> int | None:
    return items[index % len(items)] if items else None


def available_gpu_seconds(centre: Centre, allocation_id: int) -> int:
    return allocations.get_allocation(
        centre.uow(), centre.operator, allocation_id
    ).available_gpu_seconds


def head(centre: Centre) -> tuple[int, str]:
    with centre.uow() as uow:
        return uow.ledger.head()


def settle_again(centre: Centre, job_id: int, ended_at: datetime) -> None:
    """Invariant 4: a second settlement finds the charge and changes nothing."""
    before = head(centre)
    with centre.uow() as uow:
        uow.ledger.lock()
        job = uow.session.get(Job, job_id)
        assert job is not None
        allocation = uow.session.get(Allocation, job.allocation_id)
        assert allocation is not None
        assert settle_job(uow, job, allocation, ended_at) is None
        uow.commit()
    assert head(centre) == before


def do_step(centre: Centre, model: Model, now: datetime, action: str, args: list) -> None:
    if action == "award":
        org, hours, rate = args
        fund = schemes.fund_positions(centre.uow(), centre.funder)[0]
        needed = hours * 3600 * (7000 if rate is None else rate) // 10_000
        before = head(centre)
        try:
            allocation_id = award(centre, org, hours, rate, "exceptional" if rate else "")
        except InsufficientFunds:
            assert needed > fund.available_cents
            assert head(centre) == before
        else:
            assert needed <= fund.available_cents
            model.allocations.append(allocation_id)
            model.used[allocation_id] = 0

    elif action == "submit":
        allocation_id = pick(model.allocations, args[0])
        if allocation_id is None:
            return
        gpus, limit = args[1], args[2]
        with centre.uow() as uow:
            org = uow.session.get(Allocation, allocation_id).org_id  # type: ignore[union-attr]
        actor = next(a for a in centre.applicants.values() if a.org_id == org)
        room = available_gpu_seconds(centre, allocation_id)
        req = jobs.JobRequest(allocation_id, ["train"], gpus, limit)
        try:
            job = jobs.submit_job(centre.uow(), actor, req, clock=lambda: now)
        except OverQuota:
            assert gpus * limit > room
        else:
            assert gpus * limit <= room
            model.queued.append(job.id)

    elif action == "start":
        job_id = pick(model.queued, args[0])
        if job_id is None:
            return
        before = head(centre)
        with centre.uow() as uow:
            uow.ledger.lock()
            job = uow.session.get(Job, job_id)
            allocation = uow.session.get(Allocation, job.allocation_id)  # type: ignore[union-attr]
            room = uow.ledger.balance(
                acc.gpu_available(allocation.scheme_id, allocation.id),  # type: ignore[union-attr]
                acc.Unit.GPU_S,
            )
            try:
                hold = reserve_job(uow, job, allocation, now)  # type: ignore[arg-type]
            except OverQuota:
                # queued jobs may together ask for more than the allocation holds
                assert job.gpus * job.time_limit_s > room  # type: ignore[union-attr]
                refused = True
            else:
                assert hold.gpu_seconds == job.gpus * job.time_limit_s  # type: ignore[union-attr]
                job.state, job.started_at = JobState.RUNNING.value, now  # type: ignore[union-attr]
                uow.commit()
                refused = False
        if refused:
            assert head(centre) == before  # the refusal changed nothing
            return
        model.queued.remove(job_id)
        model.running.append(job_id)

    elif action == "finish":
        job_id = pick(model.running, args[0])
        if job_id is None:
            return
        with centre.uow() as uow:
            uow.ledger.lock()
            job = uow.session.get(Job, job_id)
            assert job is not None and job.started_at is not None
            allocation = uow.session.get(Allocation, job.allocation_id)
            ended_at = job.started_at + timedelta(seconds=args[1])
            charge = settle_job(uow, job, allocation, ended_at)  # type: ignore[arg-type]
            assert charge is not None
            job.state, job.ended_at = JobState.COMPLETED.value, ended_at
            uow.commit()
            billed = job.gpus * min(args[1], job.time_limit_s)
            assert charge.gpu_seconds == billed
        model.running.remove(job_id)
        model.settled[job_id] = billed
        model.used[charge.allocation_id] += billed
        settle_again(centre, job_id, ended_at + timedelta(seconds=5))

    elif action == "release":
        job_id = pick(model.running, args[0])
        if job_id is None:
            return
        with centre.uow() as uow:
            uow.ledger.lock()
            job = uow.session.get(Job, job_id)
            allocation = uow.session.get(Allocation, job.allocation_id)  # type: ignore[union-attr]
            release_job(uow, job, allocation, now)  # type: ignore[arg-type]
            job.state = JobState.FAILED.value  # type: ignore[union-attr]
            uow.commit()
        model.running.remove(job_id)

    elif action == "settle again":
        job_id = pick(sorted(model.settled), args[0])
        if job_id is not None:
            settle_again(centre, job_id, now)


def check_invariants(centre: Centre, model: Model) -> None:
    # 1. for each scheme: fund total = available + committed + spent
    (fund,) = schemes.fund_positions(centre.uow(), centre.funder)
    assert fund.total_cents == FUND_CENTS
    assert fund.total_cents == fund.available_cents + fund.committed_cents + fund.spent_cents
    assert 0 <= fund.reserved_cents <= fund.committed_cents

    with centre.uow() as uow:
        charges = list(uow.session.scalars(select(JobCharge)))
        stored = uow.ledger.stored_balances()

    # 2. every settled job: charge = subsidy + co-pay, to the cent
    for c in charges:
        assert c.charge_cents == c.subsidy_cents + c.copay_cents
        assert c.charge_cents == c.gpu_seconds  # HK$36/GPU-hour is one cent a GPU-second
        assert 0 <= c.subsidy_cents <= c.charge_cents * c.rate_bp // 10_000

    # 4. charged exactly once: one charge per settled job, for what it ran
    assert {c.job_id: c.gpu_seconds for c in charges} == model.settled
    assert fund.spent_cents == sum(c.subsidy_cents for c in charges)

    # 3. no allocation's usage exceeds its quota, and no balance goes negative
    for b in allocations.list_allocations(centre.uow(), centre.operator):
        assert b.used_gpu_seconds == model.used[b.allocation.id]
        assert b.used_gpu_seconds <= b.granted_gpu_seconds
        assert (
            b.used_gpu_seconds + b.reserved_gpu_seconds + b.available_gpu_seconds
            == b.granted_gpu_seconds
        )
    for (account, _unit), value in stored.items():
        if acc.is_source(account):
            assert value <= 0, account
        else:
            assert value >= 0, account


class CentreMachine(RuleBasedStateMachine):
    """Random use of one centre; every rule is one step a real centre could take."""

    engine: Engine  # set by the test, which has the fixture

    def __init__(self) -> None:
        super().__init__()
        reset_database(self.engine)
        factory = make_session_factory(self.engine)
        self.centre = build_centre(lambda: UnitOfWork(factory), fund_cents=FUND_CENTS)
        self.model = Model()
        for org in ORGS[:2]:  # two awards up front, so that jobs can run from the first step
            self.model.allocations.append(award(self.centre, org, gpu_hours=20))
            self.model.used[self.model.allocations[-1]] = 0
        self.now = utcnow()
        self.awards_left = 4  # each award is a whole application, review and decision: costly

    def step(self, action: str, *args: object) -> None:
        self.now += timedelta(seconds=1)
        do_step(self.centre, self.model, self.now, action, list(args))

    @precondition(lambda self: self.awards_left > 0)
    @rule(
        org=st.sampled_from(ORGS),
        hours=st.integers(1, 60),
        rate=st.sampled_from([None, 5000, 9000]),
    )
    def award(self, org: str, hours: int, rate: int | None) -> None:
        self.awards_left -= 1
        self.step("award", org, hours, rate)

    @rule(
        which=st.integers(0, 10),
        gpus=st.sampled_from([1, 2, 4, 8]),
        limit=st.sampled_from([1, 600, 3600, 9000, 40_000]),
    )
    def submit(self, which: int, gpus: int, limit: int) -> None:
        self.step("submit", which, gpus, limit)

    @precondition(lambda self: self.model.queued)
    @rule(which=st.integers(0, 30))
    def start(self, which: int) -> None:
        self.step("start", which)

    @precondition(lambda self: self.model.running)
    @rule(
        which=st.integers(0, 30),
        ran=st.one_of(st.integers(0, 50_000), st.sampled_from([0, 1, 3599, 3600, 3601])),
    )
    def finish(self, which: int, ran: int) -> None:
        self.step("finish", which, ran)

    @precondition(lambda self: self.model.running)
    @rule(which=st.integers(0, 30))
    def release(self, which: int) -> None:
        self.step("release", which)

    @precondition(lambda self: self.model.settled)
    @rule(which=st.integers(0, 30))
    def settle_again(self, which: int) -> None:
        self.step("settle again", which)

    @invariant()
    def invariants_hold(self) -> None:
        check_invariants(self.centre, self.model)

    def teardown(self) -> None:
        report = audit.verify_ledger(self.centre.uow(), self.centre.funder)
        assert report.ok, report.problems


def test_the_invariants_hold_after_every_step(engine: Engine) -> None:
    machine = type("Machine", (CentreMachine,), {"engine": engine})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=25,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
