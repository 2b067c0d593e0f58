"""Priority, then submit order; each job goes on the fullest node it fits (best fit); no backfill
reservations, so a job that does not fit now is skipped and smaller ones behind it may start."""

from __future__ import annotations

from collections.abc import Sequence

from aisc.scheduler.interface import NodeView, PendingJob, Placement


class PriorityFirstFit:
    name = "priority-best-fit"

    def schedule(
        self, pending: Sequence[PendingJob], nodes: Sequence[NodeView], now: float
    ) -> list[Placement]:
        free = {n.name: sorted(n.free_gpus) for n in nodes}
        model_of = {n.name: n.gpu_model for n in nodes}
        placements: list[Placement] = []
        for job in sorted(pending, key=queue_order):
            fits = [
                name
                for name, gpus in free.items()
                if model_of[name] == job.gpu_model and len(gpus) >= job.gpus
            ]
            if not fits:
                continue
            # best fit keeps whole nodes free for the jobs that need them
            node = min(fits, key=lambda name: (len(free[name]), name))
            taken = tuple(free[node][: job.gpus])
            free[node] = free[node][job.gpus :]
            placements.append(Placement(job_id=job.job_id, node=node, gpu_indices=taken))
        return placements


def queue_order(job: PendingJob) -> tuple[int, float, int]:
    """The order this policy considers jobs in: higher priority first, then oldest, then id."""
    return (-job.priority, job.submitted_at, job.job_id)
