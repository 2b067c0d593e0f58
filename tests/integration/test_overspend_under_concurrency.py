"""No overspend under concurrency, through a real server whose controller runs all along.

16 clients submit 1,000 jobs against an allocation with room for exactly 100 while the
controller's cycles reserve and launch them; then many operators approve awards at once
against a nearly spent fund. On PostgreSQL (READ COMMITTED, many connections) only the
ledger lock keeps these exact, which is what these tests are there to catch.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select

from aisc.backends.base import ExecutionHandle
from aisc.backends.local import LocalBackend
from aisc.config import Settings
from aisc.domain.money import award_commitment_cents, format_cents
from aisc.ledger import accounts as acc
from aisc.runtime import Runtime
from aisc.services import accounts, allocations, applications, audit, reviews, schemes
from aisc.services.context import SYSTEM, Actor
from aisc.services.controller import Controller
from aisc.store.tables import Application, Job, JobCharge
from aisc.store.uow import UnitOfWork
from tests.builders import PRICE_CENTS, RUBRIC, add_org, application_request, award, build_centre
from tests.conftest import reset_database
from tests.servers import serve_in_thread

UowFactory = Callable[[], UnitOfWork]

CLIENTS = 16
SUBMISSIONS = 1000
ROOM = 100  # one-GPU, one-hour jobs the allocation has room for
INVENTORY = "16x8xH800"
CLUSTER_GPUS = 16 * 8  # room for more jobs than the quota allows
HOUR = 3600
MARK = "AISC_TEST_PROCESS_MARK"  # in every runner's and job's environment: finds strays


# -- shared checks (the crash-safety test uses them too) ---------------------------------------


def check_centre_invariants(uow: UowFactory, auditor: Actor) -> None:
    """DESIGN.md's invariants over whatever state the centre is in, from the database alone."""
    # 1. every scheme: total = available + committed + spent, and nothing over-committed
    for fund in schemes.fund_positions(uow(), auditor):
        assert fund.total_cents == fund.available_cents + fund.committed_cents + fund.spent_cents
        assert fund.available_cents >= 0
        assert 0 <= fund.reserved_cents <= fund.committed_cents

    with uow() as u:
        u.ledger.snapshot()  # jobs, charges and transactions as of one moment
        jobs = {j.id: j for j in u.session.scalars(select(Job))}
        charges = {c.job_id: c for c in u.session.scalars(select(JobCharge))}
        txns = list(u.ledger.transactions())
        stored = u.ledger.stored_balances()

    # 2. every charge splits exactly into subsidy and co-pay
    for c in charges.values():
        assert c.charge_cents == c.subsidy_cents + c.copay_cents, c.job_id
        assert min(c.subsidy_cents, c.copay_cents, c.gpu_seconds) >= 0, c.job_id

    # 4. every hold ends exactly once: settled (and charged) or released, never both or twice
    kinds: dict[str, Counter[int]] = {k: Counter() for k in ("reserve", "settle", "release")}
    for t in txns:
        if t.kind in kinds:
            kinds[t.kind][int(t.refs["job_id"])] += 1
    for job in jobs.values():
        holding = job.reserved_gpu_seconds > 0
        ended = kinds["settle"][job.id] + kinds["release"][job.id]
        assert kinds["reserve"][job.id] == ended + holding, (job.id, job.state)
        assert kinds["settle"][job.id] <= 1, job.id
        assert (job.id in charges) == (kinds["settle"][job.id] == 1), job.id
        if holding:  # only a starting or running job holds quota
            assert job.state in ("starting", "running"), (job.id, job.state)

    # 3. no allocation's usage exceeds its quota; its GPU-seconds add up
    for b in allocations.list_allocations(uow(), auditor):
        assert min(b.used_gpu_seconds, b.reserved_gpu_seconds, b.available_gpu_seconds) >= 0
        assert b.used_gpu_seconds <= b.granted_gpu_seconds
        assert (
            b.used_gpu_seconds + b.reserved_gpu_seconds + b.available_gpu_seconds
            == b.granted_gpu_seconds
        )
        assert b.used_gpu_seconds == sum(
            c.gpu_seconds for c in charges.values() if c.allocation_id == b.allocation.id
        )
    # no balance on the wrong side of zero
    for (account, _unit), value in stored.items():
        assert (value <= 0) if acc.is_source(account) else (value >= 0), (account, value)

    # 5. the hash chain and every balance recompute from the transactions
    report = audit.verify_ledger(uow(), auditor)
    assert report.ok, report.problems


def marked_processes(mark: str) -> dict[int, int]:
    """pid -> process group of every live process carrying MARK=mark in its environment."""
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue  # gone, or not ours to read
        fields = stat[stat.rindex(b")") + 2 :].split()
        if f"{MARK}={mark}".encode() in environ.split(b"\0") and fields[0] not in (b"Z", b"X"):
            found[int(entry.name)] = int(fields[2])
    return found


def kill_marked(mark: str) -> None:
    """Last resort after a failure: SIGKILL every process group carrying the mark."""
    for pid, pgid in marked_processes(mark).items():
        try:
            if pgid not in (0, os.getpgrp()):
                os.killpg(pgid, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for(done: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def is_problem(response: httpx.Response, status: int, title: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, object] = response.json()
    assert body["status"] == status and body["title"] == title, body
    return body


# -- 1,000 submissions against room for 100 ----------------------------------------------------


@pytest.fixture
def mark(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Every process this test's runtime starts inherits the mark; all are gone at the end."""
    value = uuid.uuid4().hex
    monkeypatch.setenv(MARK, value)
    try:
        yield value
    finally:
        kill_marked(value)


@pytest.fixture
def big_runtime(database_url: str, engine: Engine, tmp_path: Path, mark: str) -> Iterator[Runtime]:
    """A runtime with room on the cluster (128 GPUs) for more than the allocation's 100 jobs,
    so that only the quota can stop a start."""
    reset_database(engine)
    settings = Settings(
        home=tmp_path / "aisc-home",
        database_url=database_url,
        inventory=INVENTORY,
        detect_gpus=False,
        controller_interval_s=0.1,
        kill_grace_s=1.0,
    )
    rt = Runtime.build(settings, migrate=False)
    try:
        yield rt
    finally:
        rt.close()


@contextmanager
def second_controller(rt: Runtime) -> Iterator[None]:
    """Another controller on the same database, cycling beside the server's own (as a second
    server would): two controllers race to reserve the same queued jobs, and only the ledger
    lock keeps their checks of the quota exact."""
    other = Controller(
        rt.uow,
        LocalBackend(rt.settings.home.resolve(), kill_grace_s=1.0),
        rt.settings.policy_config(),
    )
    stop = threading.Event()
    failures: list[BaseException] = []

    def loop() -> None:
        while not stop.is_set():
            try:
                other.cycle()
            except Exception as exc:  # noted, and fails the test below
                failures.append(exc)
            stop.wait(0.05)

    thread = threading.Thread(target=loop, name="second-controller", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert not failures, failures


class CycleCounter:
    """Counts the controller's finished cycles, so a test can wait for whole cycles to pass."""

    def __init__(self, runtime: Runtime) -> None:
        self.count = 0
        self._cycle = runtime.controller.cycle

    def __call__(self) -> object:
        report = self._cycle()
        self.count += 1
        return report

    def wait_cycles(self, n: int) -> None:
        target = self.count + n + 1  # +1: the cycle under way may have read the state already
        wait_for(lambda: self.count >= target, f"{n} controller cycles", timeout=60)


def job_states(uow: UowFactory) -> dict[int, tuple[str, str]]:
    with uow() as u:
        return {j.id: (j.state, j.reason) for j in u.session.scalars(select(Job))}


def test_1000_concurrent_submissions_start_exactly_the_100_the_quota_allows(
    big_runtime: Runtime, mark: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = big_runtime
    centre = build_centre(rt.uow, nodes=INVENTORY)
    allocation_id = award(centre, "Harbour University", gpu_hours=ROOM)
    grantee = centre.applicants["Harbour University"]
    headers = {"Authorization": f"Bearer {accounts.issue_token(rt.uow(), SYSTEM, grantee.user_id)}"}
    cycles = CycleCounter(rt)
    monkeypatch.setattr(rt.controller, "cycle", cycles)
    body = {
        "allocation_id": allocation_id,
        "command": ["sleep", "600"],  # nothing ends during the test unless cancelled
        "gpus": 1,
        "time_limit_s": HOUR,  # reserves 1 GPU x 1 hour at start
    }

    with serve_in_thread(rt) as url, ExitStack() as racing:
        racing.enter_context(second_controller(rt))
        api = f"{url}/api/v1"
        start = threading.Barrier(CLIENTS)

        def client(share: int) -> list[httpx.Response]:
            with httpx.Client(base_url=api, headers=headers, timeout=120) as http:
                start.wait()  # all clients at once, racing each other and the controller
                return [http.post("/jobs", json=body) for _ in range(share)]

        shares = [SUBMISSIONS // CLIENTS + (i < SUBMISSIONS % CLIENTS) for i in range(CLIENTS)]
        with ThreadPoolExecutor(CLIENTS) as pool:
            responses = [r for part in pool.map(client, shares) for r in part]

        # every submission is either queued or refused over quota, with a problem-details body
        assert len(responses) == SUBMISSIONS
        accepted = {r.json()["id"] for r in responses if r.status_code == 201}
        refused = [r for r in responses if r.status_code != 201]
        for r in refused:
            detail = str(is_problem(r, 409, "Over quota")["detail"])
            assert "GPU-hours left" in detail
        assert len(accepted) + len(refused) == SUBMISSIONS
        assert len(accepted) >= ROOM

        # settled: nothing starting, and whole controller cycles change nothing more
        def settled() -> bool:
            before = job_states(rt.uow)
            if any(state == "starting" for state, _ in before.values()):
                return False
            cycles.wait_cycles(2)
            return job_states(rt.uow) == before

        wait_for(settled, "the controller to settle")
        states = job_states(rt.uow)
        assert set(states) == accepted
        running = {j for j, (state, _) in states.items() if state == "running"}
        queued = {j for j, (state, _) in states.items() if state == "queued"}
        assert len(running) == ROOM, Counter(state for state, _ in states.values())
        assert running | queued == accepted  # none failed: the rest wait for quota

        # every queued job waits in the queue; those the scheduler tried to start say why
        with httpx.Client(base_url=api, headers=headers, timeout=60) as http:
            entries = http.get("/queue").json()
            positions = {e["job"]["id"]: e["position"] for e in entries}
            assert {j for j, p in positions.items() if p is None} == running
            waiting = sorted(p for j, p in positions.items() if j in queued)
            assert waiting == list(range(1, len(queued) + 1))
            tried = {j for j in queued if states[j][1]}
            # 100 of 128 GPUs busy: each cycle tries the first 28 waiting jobs, refused each time
            assert len(tried) >= min(len(queued), CLUSTER_GPUS - ROOM)
            for j in tried:
                assert states[j][1].startswith("waiting for running jobs to return quota")
            for j in sorted(queued)[:3]:
                why = http.get(f"/jobs/{j}/why").json()
                assert why["state"] == "queued" and why["position"] and why["reason"]

            balance = allocations.get_allocation(rt.uow(), SYSTEM, allocation_id)
            assert balance.reserved_gpu_seconds == ROOM * HOUR
            assert balance.available_gpu_seconds == 0
            assert balance.used_gpu_seconds == 0
            shown = http.get(f"/allocations/{allocation_id}").json()
            assert shown["gpu_hours_reserved"] == ROOM and shown["gpu_hours_available"] == 0
            check_centre_invariants(rt.uow, centre.funder)

            # 100 real runners, one per running job, and no more
            runners = {
                pid for pid, pgid in marked_processes(mark).items() if pid == pgid
            }  # each runner leads its own process group
            with rt.uow() as u:
                refs = u.session.scalars(select(Job.backend_ref).where(Job.id.in_(running)))
                pids = {ExecutionHandle.from_json(ref).pid for ref in refs if ref}
            assert pids == runners
            assert len(runners) == ROOM

            racing.close()  # one controller from here: it alone kills what it is asked to

            # cancel everything at once, racing the controller's starts and kills again
            def cancel(ids: list[int]) -> list[int]:
                with httpx.Client(base_url=api, headers=headers, timeout=120) as c:
                    return [c.post(f"/jobs/{j}/cancel").status_code for j in ids]

            order = sorted(accepted, key=lambda j: (j % 7, j))  # mixed running and queued
            with ThreadPoolExecutor(CLIENTS) as pool:
                codes = [
                    c
                    for part in pool.map(cancel, [order[i::CLIENTS] for i in range(CLIENTS)])
                    for c in part
                ]
            assert set(codes) == {200}, Counter(codes)
            wait_for(
                lambda: all(s == "cancelled" for s, _ in job_states(rt.uow).values()),
                "every job to be cancelled",
            )

    wait_for(lambda: not marked_processes(mark), "every job's processes to end", timeout=30)
    after = allocations.get_allocation(rt.uow(), SYSTEM, allocation_id)
    assert after.reserved_gpu_seconds == 0 and after.subsidy_reserved_cents == 0
    with rt.uow() as u:
        charged = {c.job_id for c in u.session.scalars(select(JobCharge))}
    # the hundred that ran are charged for what they ran; a queued job that started as the
    # cancellations returned quota is charged too (the invariants: one settle per hold)
    assert running <= charged
    check_centre_invariants(rt.uow, centre.funder)


# -- many approvals against a nearly spent fund ------------------------------------------------

AWARD_HOURS = 10
ROOM_FOR = 4  # awards the fund has room for
APPROVALS = 12  # awards approved at once


def test_concurrent_awards_never_over_commit_a_nearly_spent_fund(
    runtime: Runtime, live_server: str
) -> None:
    award_cents = award_commitment_cents(AWARD_HOURS, PRICE_CENTS, 7000)
    fund_cents = ROOM_FOR * award_cents + award_cents - 1  # a cent short of one more
    centre = build_centre(runtime.uow, fund_cents=fund_cents)
    app_ids: list[int] = []
    for i in range(APPROVALS):
        applicant = add_org(centre, f"Lab {i}")
        app = applications.submit_application(
            runtime.uow(), applicant, application_request(centre.scheme_id, AWARD_HOURS)
        )
        for reviewer in centre.reviewers[:2]:
            reviews.submit_review(
                runtime.uow(), reviewer, app.id, {k: 7 for k in RUBRIC}, "approve", "sound"
            )
        app_ids.append(app.id)
    # several operators, each with their own token and connection
    operators = [centre.operator] + [
        accounts.actor_for(
            accounts.create_user(
                runtime.uow(), centre.operator, f"Operator {i}", f"op{i}@centre.test", "operator"
            )
        )
        for i in range(3)
    ]
    tokens = [accounts.issue_token(runtime.uow(), SYSTEM, op.user_id) for op in operators]
    today = date.today()
    terms = {
        "outcome": "approve",
        "gpu_hours": AWARD_HOURS,
        "starts_on": (today - timedelta(days=1)).isoformat(),
        "ends_on": (today + timedelta(days=90)).isoformat(),
    }
    start = threading.Barrier(APPROVALS)

    def approve(i: int) -> httpx.Response:
        headers = {"Authorization": f"Bearer {tokens[i % len(tokens)]}"}
        with httpx.Client(base_url=f"{live_server}/api/v1", headers=headers, timeout=60) as http:
            http.get("/me").raise_for_status()  # connected and authenticated before the race
            start.wait()
            return http.post(f"/applications/{app_ids[i]}/decision", json=terms)

    with ThreadPoolExecutor(APPROVALS) as pool:
        responses = list(pool.map(approve, range(APPROVALS)))

    approved = [app_ids[i] for i, r in enumerate(responses) if r.status_code == 201]
    assert len(approved) == ROOM_FOR, [r.status_code for r in responses]
    left = fund_cents - ROOM_FOR * award_cents
    for r in responses:
        if r.status_code != 201:
            detail = str(is_problem(r, 409, "Insufficient funds")["detail"])
            # both amounts: what the award needs and what the fund has left
            assert f"HK${format_cents(award_cents)}" in detail
            assert f"HK${format_cents(left)} uncommitted" in detail

    (fund,) = schemes.fund_positions(runtime.uow(), centre.funder)
    assert fund.total_cents == fund_cents
    assert fund.committed_cents == ROOM_FOR * award_cents
    assert fund.available_cents == left
    with runtime.uow() as u:
        status = {a.id: a.status for a in u.session.scalars(select(Application))}
    assert {a for a, s in status.items() if s == "approved"} == set(approved)
    assert all(status[a] == "submitted" for a in app_ids if a not in approved)  # untouched
    assert len(allocations.list_allocations(runtime.uow(), centre.funder)) == ROOM_FOR
    check_centre_invariants(runtime.uow, centre.funder)
