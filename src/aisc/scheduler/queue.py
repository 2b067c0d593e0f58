"""Pending jobs as columns of numpy arrays, kept incrementally: a cycle over 50,000 jobs reads
arrays instead of building objects. Removal marks a slot dead; dead slots are compacted away
when the arrays would otherwise grow."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from aisc.scheduler.interface import PendingJob

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
COLUMNS = (
    "ids",
    "project",
    "gpus",
    "model",
    "submit",
    "limit",
    "qos",
    "key",
    "base_priority",
    "alive",
)


class PendingQueue:
    def __init__(self, capacity: int = 1024) -> None:
        self.ids: IntArray = np.zeros(capacity, np.int64)
        self.project: IntArray = np.zeros(capacity, np.int64)  # fair-share code
        self.gpus: IntArray = np.zeros(capacity, np.int64)
        self.model: IntArray = np.zeros(capacity, np.int64)  # model code
        self.submit: FloatArray = np.zeros(capacity)
        self.limit: FloatArray = np.zeros(capacity)
        self.qos: FloatArray = np.zeros(capacity)  # priority class mapped to [0, 1]
        self.key: FloatArray = np.zeros(capacity)
        # weighted size and class factors, set by the scheduler: they never change while pending
        self.base_priority: FloatArray = np.zeros(capacity)
        self.alive: BoolArray = np.zeros(capacity, np.bool_)
        self.used = 0
        self.slot_of: dict[int, int] = {}
        self.jobs: dict[int, PendingJob] = {}

    def __len__(self) -> int:
        return len(self.slot_of)

    def __contains__(self, job_id: int) -> bool:
        return job_id in self.slot_of

    def add(self, job: PendingJob, project_code: int, model_code: int) -> int:
        """Add a job; returns its slot."""
        if job.job_id in self.slot_of:
            raise ValueError(f"job {job.job_id} is already pending")
        if self.used == len(self.ids):
            self._make_room()
        s = self.used
        self.ids[s] = job.job_id
        self.project[s] = project_code
        self.gpus[s] = job.gpus
        self.model[s] = model_code
        self.submit[s] = job.submitted_at
        self.limit[s] = job.time_limit_s
        self.qos[s] = (min(10, max(-10, job.priority)) + 10) / 20
        self.key[s] = job.sort_key
        self.alive[s] = True
        self.used += 1
        self.slot_of[job.job_id] = s
        self.jobs[job.job_id] = job
        return s

    def remove(self, job_id: int) -> PendingJob | None:
        s = self.slot_of.pop(job_id, None)
        if s is None:
            return None
        self.alive[s] = False
        return self.jobs.pop(job_id)

    def live_slots(self) -> IntArray:
        return self.alive[: self.used].nonzero()[0]

    def _make_room(self) -> None:
        if len(self.slot_of) <= self.used // 2:
            self._compact()
        else:
            self._grow(2 * len(self.ids))

    def _grow(self, capacity: int) -> None:
        for name in COLUMNS:
            old = getattr(self, name)
            new = np.zeros(capacity, old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def _compact(self) -> None:
        keep = self.live_slots()
        for name in COLUMNS:
            column = getattr(self, name)
            column[: len(keep)] = column[keep]
            column[len(keep) :] = 0
        self.used = len(keep)
        self.slot_of = {int(job_id): s for s, job_id in enumerate(self.ids[: self.used])}
