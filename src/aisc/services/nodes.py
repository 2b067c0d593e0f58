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
    result = []
    for node in nodes:
        here = [j for j in active if j.node == node.name]
        busy = sorted(i for j in here for i in (j.gpu_indices or []))
        result.append(NodeStatus(node.name, node.gpu_model, node.gpus, busy, [j.id for j in here]))
    return result
