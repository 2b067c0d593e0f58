"""Concurrent starts cannot overspend an allocation (DESIGN.md invariant 3)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from aisc.domain.errors import OverQuota
from aisc.services import allocations, audit, jobs
from aisc.services.context import SYSTEM
from aisc.services.metering import reserve_job
from aisc.store.tables import Allocation, Job
from tests.builders import award, build_centre
from tests.conftest import UowFactory


def test_concurrent_reservations_take_exactly_the_room_there_is(uow_factory: UowFactory) -> None:
    centre = build_centre(uow_factory)
    # 10 GPU-hours: room for exactly ten 1-GPU jobs with one-hour limits
    allocation_id = award(centre, "Harbour University", gpu_hours=10)
    applicant = centre.applicants["Harbour University"]
    job_ids = [
        jobs.submit_job(
            uow_factory(), applicant, jobs.JobRequest(allocation_id, ["true"], 1, 3600)
        ).id
        for _ in range(40)
    ]
    start = threading.Barrier(8)

    def try_reserve(job_id: int) -> bool:
        with uow_factory() as uow:
            uow.ledger.lock()
            job = uow.session.get(Job, job_id)
            allocation = uow.session.get(Allocation, allocation_id)
            assert job is not None and allocation is not None
            try:
                reserve_job(uow, job, allocation, job.submitted_at)
            except OverQuota:
                return False
            job.state = "starting"
            uow.commit()
            return True

    def worker(chunk: list[int]) -> list[bool]:
        start.wait()
        return [try_reserve(j) for j in chunk]

    chunks = [job_ids[i::8] for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = [ok for part in pool.map(worker, chunks) for ok in part]

    assert results.count(True) == 10
    balance = allocations.get_allocation(uow_factory(), SYSTEM, allocation_id)
    assert balance.reserved_gpu_seconds == 10 * 3600
    assert balance.available_gpu_seconds == 0
    assert balance.subsidy_committed_cents >= 0
    report = audit.verify_ledger(uow_factory(), centre.funder)
    assert report.ok, report.problems
