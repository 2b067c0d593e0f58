"""SubmissionIntake: API job submissions checked one by one and committed in batches by one
thread (group commit), against the real test database (SQLite, or PostgreSQL when
AISC_TEST_DATABASE_URL names one)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from aisc.api.problems import status_for
from aisc.domain.errors import (
    AuthenticationFailed,
    NotFound,
    OverQuota,
    PermissionDenied,
    Unavailable,
)
from aisc.domain.model import JobState
from aisc.runtime import Runtime
from aisc.services import accounts, jobs
from aisc.services.context import Clock, utcnow
from aisc.services.intake import SubmissionIntake
from aisc.store.db import make_session_factory
from aisc.store.tables import Job
from aisc.store.uow import UnitOfWork
from tests.builders import Centre, award, build_centre
from tests.conftest import UowFactory

TIMEOUT_S = 30  # how long a test waits on the intake's thread before calling it stuck
ORG = "Harbour University"
GPU_HOURS = 10  # the allocation's quota: 36,000 GPU-seconds


class InjectedFault(Exception):
    """A commit made to fail on purpose, next to the real database."""


Fail = Callable[[int, Session], bool]  # whether unit of work number N fails to commit


class OpenIntake(Protocol):
    def __call__(
        self, new_uow: Callable[[], UnitOfWork], clock: Clock = ...
    ) -> SubmissionIntake: ...


class _InstrumentedUow(UnitOfWork):
    """A real unit of work that reports its commits to its factory, or fails instead."""

    def __init__(
        self, sessions: sessionmaker[Session], owner: InstrumentedFactory, number: int
    ) -> None:
        super().__init__(sessions)
        self._owner = owner
        self._number = number

    def commit(self) -> None:
        if self._owner.fail(self._number, self.session):
            raise InjectedFault(f"unit of work {self._number} failed to commit")
        super().commit()
        self._owner.commits += 1


class InstrumentedFactory:
    """A unit-of-work factory on the test database that counts the units it opens and their
    commits, can hold its first call back until released, and can make chosen commits fail."""

    def __init__(
        self, sessions: sessionmaker[Session], hold_first: bool = False, fail: Fail | None = None
    ) -> None:
        self._sessions = sessions
        self.fail: Fail = fail or (lambda _number, _session: False)
        self.calls = 0
        self.commits = 0
        self.entered = threading.Event()  # the intake's thread is inside its first call
        self.released = threading.Event()
        if not hold_first:
            self.released.set()

    def __call__(self) -> UnitOfWork:
        self.calls += 1  # only the intake's one thread calls this
        if self.calls == 1:
            self.entered.set()
            if not self.released.wait(TIMEOUT_S):
                raise TimeoutError("the test never released the first unit of work")
        return _InstrumentedUow(self._sessions, self, self.calls)


class SteppingClock:
    """Each reading one second after the last, and every reading kept: when each submission
    arrived, as the intake saw it."""

    def __init__(self) -> None:
        # whole seconds, after the rate card's first price took effect
        self._next = utcnow().replace(microsecond=0) + timedelta(minutes=1)
        self._lock = threading.Lock()
        self.readings: list[datetime] = []

    def __call__(self) -> datetime:
        with self._lock:
            now, self._next = self._next, self._next + timedelta(seconds=1)
            self.readings.append(now)
            return now


@dataclass
class Scene:
    """A centre with one open allocation and API tokens of every kind."""

    uow: UowFactory
    sessions: sessionmaker[Session]
    centre: Centre
    allocation_id: int
    applicant_token: str
    operator_token: str
    reviewer_token: str
    revoked_token: str

    def request(self, name: str, gpus: int = 1, time_limit_s: int = 3600) -> jobs.JobRequest:
        return jobs.JobRequest(
            self.allocation_id, ["python", "train.py"], gpus, time_limit_s, name=name
        )


@pytest.fixture
def scene(uow_factory: UowFactory, engine: Engine) -> Scene:
    centre = build_centre(uow_factory)
    allocation_id = award(centre, ORG, gpu_hours=GPU_HOURS)
    applicant = centre.applicants[ORG]
    operator = centre.operator

    def token_for(user_id: int) -> str:
        return accounts.issue_token(uow_factory(), operator, user_id, "test")

    revoked = token_for(applicant.user_id)
    accounts.revoke_token(uow_factory(), operator, revoked)
    return Scene(
        uow=uow_factory,
        sessions=make_session_factory(engine),
        centre=centre,
        allocation_id=allocation_id,
        applicant_token=token_for(applicant.user_id),
        operator_token=token_for(operator.user_id),
        reviewer_token=token_for(centre.reviewers[0].user_id),
        revoked_token=revoked,
    )


@pytest.fixture
def open_intake() -> Iterator[OpenIntake]:
    """Intakes that are closed when the test ends, their held factories released first."""
    opened: list[tuple[SubmissionIntake, Callable[[], UnitOfWork]]] = []

    def make(new_uow: Callable[[], UnitOfWork], clock: Clock = utcnow) -> SubmissionIntake:
        intake = SubmissionIntake(new_uow, clock=clock)
        opened.append((intake, new_uow))
        return intake

    yield make
    for intake, new_uow in opened:
        if isinstance(new_uow, InstrumentedFactory):
            new_uow.released.set()
        intake.close(timeout_s=TIMEOUT_S)


def outcome(future: Future[Job]) -> Job | BaseException:
    """The job a submission got, or the error that refused it."""
    error = future.exception(timeout=TIMEOUT_S)
    return future.result() if error is None else error


def job_of(future: Future[Job]) -> Job:
    result = outcome(future)
    assert isinstance(result, Job), f"expected a job, got {result!r}"
    return result


def stored_jobs(uow: UowFactory) -> list[Job]:
    with uow() as u:
        return list(u.session.scalars(select(Job).order_by(Job.id)))


def held_intake(
    scene: Scene, open_intake: OpenIntake, fail: Fail | None = None
) -> tuple[SubmissionIntake, InstrumentedFactory, Future[Job]]:
    """An intake whose thread is held inside its first unit of work, writing a first job: what
    is submitted next waits, and is written together in the next batch once released."""
    factory = InstrumentedFactory(scene.sessions, hold_first=True, fail=fail)
    intake = open_intake(factory)
    first = intake.submit(scene.applicant_token, scene.request("first"))
    assert factory.entered.wait(TIMEOUT_S), "the intake's thread never began its first batch"
    return intake, factory, first


def test_a_mixed_batch_is_answered_submission_by_submission_in_one_transaction(
    scene: Scene, open_intake: OpenIntake
) -> None:
    """Each submission of one batch gets its own job or its own refusal, in order, and the
    accepted ones are committed together, once, with the time each arrived."""
    clock = SteppingClock()
    factory = InstrumentedFactory(scene.sessions, hold_first=True)
    intake = open_intake(factory, clock=clock)
    first = intake.submit(scene.applicant_token, scene.request("first"))
    assert factory.entered.wait(TIMEOUT_S)

    over_quota = scene.request("too big", gpus=8, time_limit_s=3 * 3600)  # 24 > 10 GPU-hours
    unknown = jobs.JobRequest(scene.allocation_id + 1000, ["python", "train.py"], 1, 3600)
    cases: list[tuple[str | None, jobs.JobRequest, type[BaseException] | None]] = [
        (scene.applicant_token, scene.request("a"), None),
        (scene.revoked_token, scene.request("revoked"), AuthenticationFailed),
        (scene.operator_token, scene.request("b"), None),
        (None, scene.request("anonymous"), AuthenticationFailed),
        (scene.reviewer_token, scene.request("reviewer"), PermissionDenied),
        (scene.applicant_token, over_quota, OverQuota),
        (scene.applicant_token, unknown, NotFound),
        (scene.applicant_token, scene.request("c"), None),
    ]
    futures = [intake.submit(token, req) for token, req, _ in cases]
    factory.released.set()

    outcomes = [outcome(first), *map(outcome, futures)]
    expected = [None, *(kind for _, _, kind in cases)]
    for got, kind in zip(outcomes, expected, strict=True):
        if kind is None:
            assert isinstance(got, Job), got
        else:
            assert type(got) is kind, got
    accepted = [o for o in outcomes if isinstance(o, Job)]
    assert [j.name for j in accepted] == ["first", "a", "b", "c"]
    ids = [j.id for j in accepted]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)

    # the first job alone, then everything else: two units of work, two commits
    assert (factory.calls, factory.commits) == (2, 2)

    arrived = dict(zip(["first", *(req.name for _, req, _ in cases)], clock.readings, strict=True))
    stored = stored_jobs(scene.uow)
    assert [(j.id, j.name) for j in stored] == [(j.id, j.name) for j in accepted]
    for job in stored:
        assert job.state == JobState.QUEUED.value
        assert job.submitted_at == arrived[job.name]
        assert job.allocation_id == scene.allocation_id
    users = {j.name: j.user_id for j in stored}
    assert users["b"] == scene.centre.operator.user_id
    assert users["a"] == users["c"] == scene.centre.applicants[ORG].user_id


def test_a_batch_that_fails_as_a_whole_is_written_again_one_by_one(
    scene: Scene, open_intake: OpenIntake
) -> None:
    """When a batch's commit fails, each of its submissions is written alone: every one gets
    its job, and none is written twice."""
    intake, factory, first = held_intake(
        scene, open_intake, fail=lambda number, _session: number == 2
    )
    names = [f"job-{i}" for i in range(5)]
    futures = [intake.submit(scene.applicant_token, scene.request(n)) for n in names]
    factory.released.set()

    written = [job_of(first), *map(job_of, futures)]
    assert [j.name for j in written] == ["first", *names]
    ids = [j.id for j in written]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # first alone; the batch of five (failed); then the five again, one unit each
    assert (factory.calls, factory.commits) == (1 + 1 + 5, 1 + 5)
    stored = stored_jobs(scene.uow)
    assert sorted(j.name for j in stored) == sorted(["first", *names])
    assert [j.id for j in stored] == ids


def test_a_submission_that_cannot_be_written_fails_alone(
    scene: Scene, open_intake: OpenIntake
) -> None:
    """A submission whose write keeps failing gets that failure; the others of its batch are
    written."""

    def poisoned(_number: int, session: Session) -> bool:
        return any(isinstance(o, Job) and o.name == "poison" for o in session.identity_map.values())

    intake, factory, first = held_intake(scene, open_intake, fail=poisoned)
    before = intake.submit(scene.applicant_token, scene.request("before"))
    poison = intake.submit(scene.applicant_token, scene.request("poison"))
    after = intake.submit(scene.applicant_token, scene.request("after"))
    factory.released.set()

    with pytest.raises(InjectedFault):
        poison.result(timeout=TIMEOUT_S)
    assert [job_of(f).name for f in (first, before, after)] == ["first", "before", "after"]
    assert [j.name for j in stored_jobs(scene.uow)] == ["first", "before", "after"]


def test_a_submission_cancelled_before_its_batch_is_written_is_withdrawn(
    scene: Scene, open_intake: OpenIntake
) -> None:
    """Cancelling a waiting submission's future withdraws it; the rest of its batch is
    written."""
    intake, factory, first = held_intake(scene, open_intake)
    kept = intake.submit(scene.applicant_token, scene.request("kept"))
    withdrawn = intake.submit(scene.applicant_token, scene.request("withdrawn"))
    also_kept = intake.submit(scene.applicant_token, scene.request("also kept"))
    assert withdrawn.cancel()
    factory.released.set()

    assert [job_of(f).name for f in (first, kept, also_kept)] == ["first", "kept", "also kept"]
    assert withdrawn.cancelled()
    assert [j.name for j in stored_jobs(scene.uow)] == ["first", "kept", "also kept"]
    assert (factory.calls, factory.commits) == (2, 2)


def test_close_writes_what_is_waiting_then_refuses_submissions(
    scene: Scene, open_intake: OpenIntake
) -> None:
    """Submissions made before close() are still written; after it, submit raises Unavailable,
    which the API answers with 503."""
    intake, factory, first = held_intake(scene, open_intake)
    waiting = [intake.submit(scene.applicant_token, scene.request(f"w{i}")) for i in range(3)]
    intake.close(timeout_s=0)  # returns at once: the intake's thread is still held
    with pytest.raises(Unavailable):
        intake.submit(scene.applicant_token, scene.request("too late"))
    factory.released.set()

    assert [job_of(f).name for f in (first, *waiting)] == ["first", "w0", "w1", "w2"]
    assert [j.name for j in stored_jobs(scene.uow)] == ["first", "w0", "w1", "w2"]
    assert status_for(Unavailable("shutting down")) == 503


def test_the_api_answers_503_once_the_intake_is_closed(
    runtime: Runtime, client: TestClient
) -> None:
    """POST /api/v1/jobs on a closed intake is a 503 problem, not a 500."""
    runtime.intake.close()
    response = client.post(
        "/api/v1/jobs",
        json={"allocation_id": 1, "command": ["true"], "gpus": 1, "time_limit_s": 60},
        headers={"Authorization": "Bearer any-token"},  # none at all is refused first, 401
    )
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")


def test_concurrent_submitters_each_get_their_own_jobs_in_order(
    scene: Scene, open_intake: OpenIntake
) -> None:
    """Eight threads submitting fifty jobs each through one intake: every submission gets a
    job of its own, all are stored once, and each thread's jobs keep its order."""
    threads, each = 8, 50
    intake = open_intake(scene.uow)
    start = threading.Barrier(threads)

    def submitter(t: int) -> list[Future[Job]]:
        start.wait(TIMEOUT_S)
        return [
            intake.submit(scene.applicant_token, scene.request(f"t{t}-{i}", time_limit_s=60))
            for i in range(each)
        ]

    with ThreadPoolExecutor(max_workers=threads) as pool:
        per_thread = list(pool.map(submitter, range(threads)))

    all_ids: set[int] = set()
    for t, futures in enumerate(per_thread):
        mine = [job_of(f) for f in futures]
        assert [j.name for j in mine] == [f"t{t}-{i}" for i in range(each)]
        ids = [j.id for j in mine]
        assert ids == sorted(ids), f"thread {t}'s jobs were written out of order"
        all_ids.update(ids)
    assert len(all_ids) == threads * each

    stored = stored_jobs(scene.uow)
    assert len(stored) == threads * each
    assert {j.id for j in stored} == all_ids
    assert {j.state for j in stored} == {JobState.QUEUED.value}


class ThreadKiller(BaseException):
    """Not an Exception: what ends a thread rather than a batch."""


# the staged death is reported by pytest as an unhandled thread exception: it is the point
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dying_intake_thread_answers_its_batch_and_a_new_thread_takes_over(
    scene: Scene, open_intake: OpenIntake
) -> None:
    """Something that kills the intake's thread mid-batch (not an ordinary error) still answers
    every submission of that batch, and the next submission starts a new thread and is
    written: no request waits forever on a dead thread."""

    def kill_first(number: int, _session: Session) -> bool:
        if number == 1:
            raise ThreadKiller("the thread is going down")
        return False

    factory = InstrumentedFactory(scene.sessions, fail=kill_first)
    intake = open_intake(factory)
    doomed = intake.submit(scene.applicant_token, scene.request("doomed"))
    assert isinstance(outcome(doomed), ThreadKiller)
    after = job_of(intake.submit(scene.applicant_token, scene.request("after")))
    assert [j.name for j in stored_jobs(scene.uow)] == ["after"]
    assert after.state == JobState.QUEUED.value


def test_the_api_refuses_a_submission_without_a_token_before_reading_its_body(
    client: TestClient,
) -> None:
    """No token and a bad body: 401, as on every other route, not the body's 422."""
    response = client.post("/api/v1/jobs", json={"command": "not a list"})
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "token" in response.json()["detail"]
