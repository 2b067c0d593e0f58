"""The cluster as operators see it: nodes, GPUs busy and free, what runs where."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from aisc.domain.model import JobState
from aisc.services.context import Actor
from aisc.store.tables import Job, Node
from aisc.store.uow import UnitOfWork


@dataclass(frozen=True)
class NodeStatus:
    name: str
    gpu_model: str
    gpus: int
    busy_gpus: list[int]
    jobs: list[int]

    @property
    def free_gpus(self) -> int:
        return self.gpus - len(self.busy_gpus)


def list_nodes(uow: UnitOfWork, actor: Actor) -> list[NodeStatus]:
    with uow:
        nodes = list(uow.session.scalars(select(Node).order_by(Node.name)))
        active = list(
            uow.session.scalars(
                select(Job).where(Job.state.in_([JobState.STARTING.value, JobState.RUNNING.value]))
            )
        )
    busy: dict[str, list[int]] = {}
    jobs_on: dict[str, list[int]] = {}
    for job in active:
        for part in job.placement or []:
            busy.setdefault(part["node"], []).extend(part["gpus"])
            jobs_on.setdefault(part["node"], []).append(job.id)
    return [
        NodeStatus(
            n.name, n.gpu_model, n.gpus, sorted(busy.get(n.name, [])), jobs_on.get(n.name, [])
        )
        for n in nodes
    ]
