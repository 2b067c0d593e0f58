"""Allocations, jobs, the queue and the cluster's nodes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Query, status
from fastapi.responses import PlainTextResponse, Response

from aisc.api import problems
from aisc.api.deps import ActorDep, RuntimeDep, TokenDep, UowDep
from aisc.api.schemas import (
    MAX_ID,
    AllocationOut,
    ExplanationOut,
    IdPath,
    JobIn,
    JobOut,
    NodeOut,
    PriorityFactorsOut,
    QueueEntryOut,
    Text,
)
from aisc.domain.money import format_rate
from aisc.services import allocations, jobs, nodes
from aisc.services.allocations import AllocationBalance

router = APIRouter(tags=["compute"], responses=problems.RESPONSES)


def allocation_out(b: AllocationBalance) -> AllocationOut:
    a = b.allocation
    return AllocationOut(
        id=a.id,
        application_id=a.application_id,
        scheme_id=a.scheme_id,
        org_id=a.org_id,
        name=a.name,
        gpu_model=a.gpu_model,
        status=a.status,
        subsidy_rate=format_rate(a.rate_bp),
        price_cents_per_gpu_hour=a.price_cents_per_gpu_hour,
        starts_at=a.starts_at,
        ends_at=a.ends_at,
        conditions=a.conditions,
        gpu_hours_granted=b.granted_gpu_seconds / 3600,
        gpu_hours_available=b.available_gpu_seconds / 3600,
        gpu_hours_reserved=b.reserved_gpu_seconds / 3600,
        gpu_hours_used=b.used_gpu_seconds / 3600,
        subsidy_commitment_cents=a.commitment_cents,
        subsidy_committed_cents=b.subsidy_committed_cents,
        subsidy_reserved_cents=b.subsidy_reserved_cents,
        subsidy_spent_cents=b.subsidy_spent_cents,
    )


@router.get("/allocations", response_model=list[AllocationOut])
def list_allocations(uow: UowDep, actor: ActorDep) -> list[AllocationOut]:
    return [allocation_out(b) for b in allocations.list_allocations(uow, actor)]


@router.get("/allocations/{allocation_id}", response_model=AllocationOut)
def get_allocation(allocation_id: IdPath, uow: UowDep, actor: ActorDep) -> AllocationOut:
    return allocation_out(allocations.get_allocation(uow, actor, allocation_id))


@router.post("/allocations/{allocation_id}/close", response_model=AllocationOut)
def close_allocation(allocation_id: IdPath, uow: UowDep, actor: ActorDep) -> AllocationOut:
    return allocation_out(allocations.close_allocation(uow, actor, allocation_id))


@router.get("/jobs", response_model=list[JobOut])
def list_jobs(
    uow: UowDep,
    actor: ActorDep,
    state: list[Text] = Query(default=[]),
    allocation_id: int | None = Query(default=None, ge=1, le=MAX_ID),
    limit: int = Query(default=200, ge=1, le=5000),
) -> list[JobOut]:
    found = jobs.list_jobs(uow, actor, state, allocation_id, limit)
    return [JobOut.model_validate(j) for j in found]


@router.post("/jobs", response_model=JobOut, status_code=status.HTTP_201_CREATED)
async def submit_job(body: JobIn, runtime: RuntimeDep, token: TokenDep) -> Response:
    """Queue a job. Submissions that arrive together are checked one by one and committed
    together; the answer comes once the job is committed."""
    request = jobs.JobRequest(
        allocation_id=body.allocation_id,
        argv=body.command,
        gpus=body.gpus,
        time_limit_s=body.time_limit_s,
        name=body.name,
        priority=body.priority,
    )
    # async, with no thread of its own: the intake's thread does the database work
    job = await asyncio.wrap_future(runtime.intake.submit(token, request))
    # serialised once, here: returned as a model, it would be validated and serialised again
    return Response(
        JobOut.model_validate(job).model_dump_json(),
        status_code=status.HTTP_201_CREATED,
        media_type="application/json",
    )


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: IdPath, uow: UowDep, actor: ActorDep) -> JobOut:
    return JobOut.model_validate(jobs.get_job(uow, actor, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: IdPath, uow: UowDep, actor: ActorDep) -> JobOut:
    return JobOut.model_validate(jobs.cancel_job(uow, actor, job_id))


@router.get("/jobs/{job_id}/logs", response_class=PlainTextResponse)
def job_logs(
    job_id: IdPath,
    uow: UowDep,
    actor: ActorDep,
    runtime: RuntimeDep,
    stream: Literal["stdout", "stderr"] = "stdout",
    tail: int = Query(default=64_000, ge=1, le=jobs.LOG_TAIL_MAX),
) -> str:
    return jobs.job_log(uow, actor, job_id, stream, runtime.backend.log_path, tail)


@router.get("/queue", response_model=list[QueueEntryOut])
def queue(uow: UowDep, actor: ActorDep, runtime: RuntimeDep) -> list[QueueEntryOut]:
    positions = runtime.controller.positions()
    return [
        QueueEntryOut(position=e.position, job=JobOut.model_validate(e.job))
        for e in jobs.queue(uow, actor, positions)
    ]


@router.get("/jobs/{job_id}/why", response_model=ExplanationOut)
def why(job_id: IdPath, uow: UowDep, actor: ActorDep, runtime: RuntimeDep) -> ExplanationOut:
    """Why a job waits: its priority factors, what it waits for, its reserved start if any."""
    job, e = jobs.explain_job(uow, actor, job_id, runtime.controller.explain)
    factors = None if e.factors is None else PriorityFactorsOut(**e.factors.__dict__)
    return ExplanationOut(
        job_id=job.id,
        state=job.state,
        position=e.position,
        reason=job.reason if job.state != "queued" and e.state == "unknown" else e.reason,
        factors=factors,
        reserved_start=None if e.reserved_start is None else _at(e.reserved_start),
        reserved_nodes=list(e.reserved_nodes),
    )


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


@router.get("/nodes", response_model=list[NodeOut])
def list_nodes(uow: UowDep, actor: ActorDep) -> list[NodeOut]:
    return [
        NodeOut(
            name=n.name,
            gpu_model=n.gpu_model,
            gpus=n.gpus,
            busy_gpus=n.busy_gpus,
            free_gpus=n.free_gpus,
            jobs=n.jobs,
        )
        for n in nodes.list_nodes(uow, actor)
    ]
