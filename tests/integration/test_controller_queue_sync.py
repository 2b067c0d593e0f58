"""The controller's queue sync: the scheduler's pending jobs follow the queued jobs in the
database, read incrementally (newer ids and a count), with a full read at least every
FULL_QUEUE_READ_EVERY syncs."""

from __future__ import annotations

from sqlalchemy import update

from aisc.domain.model import JobState
from aisc.runtime import Runtime
from aisc.services import jobs
from aisc.services.controller import FULL_QUEUE_READ_EVERY, Controller
from aisc.store.tables import Job
from tests.builders import Centre, award, build_centre

ORG = "Harbour University"


def queue_job(runtime: Runtime, centre: Centre, allocation: int, name: str) -> int:
    """A queued job (`positions()` only syncs the queue: nothing here starts a job)."""
    request = jobs.JobRequest(allocation, ["sleep", "600"], 8, 3600, name=name)
    return jobs.submit_job(runtime.uow(), centre.applicants[ORG], request).id


def set_state(runtime: Runtime, job_id: int, state: JobState) -> None:
    """Another writer's change, behind the controller's back."""
    with runtime.engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == job_id).values(state=state.value))


def pending(controller: Controller) -> set[int]:
    return set(controller.positions())  # each call syncs the queue first


def test_new_and_cancelled_queued_jobs_reach_the_scheduler(runtime: Runtime) -> None:
    centre = build_centre(runtime.uow)
    allocation = award(centre, ORG, gpu_hours=1000)
    controller = runtime.controller
    assert isinstance(controller, Controller)
    a, b, c = (queue_job(runtime, centre, allocation, n) for n in "abc")
    assert pending(controller) == {a, b, c}
    jobs.cancel_job(runtime.uow(), centre.applicants[ORG], b)
    assert pending(controller) == {a, c}
    d = queue_job(runtime, centre, allocation, "d")
    assert pending(controller) == {a, c, d}
    set_state(runtime, a, JobState.FAILED)
    set_state(runtime, c, JobState.CANCELLED)
    e = queue_job(runtime, centre, allocation, "e")
    assert pending(controller) == {d, e}


def test_a_late_job_under_an_older_id_is_found_by_the_periodic_full_read(
    runtime: Runtime,
) -> None:
    """A job queued under an id below the newest seen, while another queued job is cancelled,
    leaves the count as it was: the incremental read misses both, and the full read that comes
    at least every FULL_QUEUE_READ_EVERY syncs finds them."""
    centre = build_centre(runtime.uow)
    allocation = award(centre, ORG, gpu_hours=1000)
    controller = runtime.controller
    assert isinstance(controller, Controller)
    late = queue_job(runtime, centre, allocation, "late")
    set_state(runtime, late, JobState.CANCELLED)  # not yet visible as queued, as if uncommitted
    first = queue_job(runtime, centre, allocation, "first")
    second = queue_job(runtime, centre, allocation, "second")
    assert pending(controller) == {first, second}
    pending(controller)  # an incremental sync, so the next full read is a full period away
    set_state(runtime, late, JobState.QUEUED)
    set_state(runtime, first, JobState.CANCELLED)
    seen = [pending(controller) for _ in range(FULL_QUEUE_READ_EVERY + 1)]
    assert seen[0] == {first, second}  # the count is unchanged: nothing read yet
    assert seen[-1] == {late, second}
