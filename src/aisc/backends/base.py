"""The interface between the controller and whatever actually runs job processes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

LogStream = Literal["stdout", "stderr"]


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a backend needs to start one job."""

    job_id: int
    argv: tuple[str, ...]  # command, run directly (no shell)
    cwd: str | None  # working directory; None -> the job's own directory
    env: Mapping[str, str]  # extra environment for the job
    node: str  # inventory node name
    gpu_indices: tuple[int, ...]  # -> CUDA_VISIBLE_DEVICES="0,1"; "" when no GPUs

    @property
    def cuda_visible_devices(self) -> str:
        return ",".join(str(i) for i in self.gpu_indices)


@dataclass(frozen=True)
class ExecutionHandle:
    """What the controller stores (as JSON) to find a running job again after a restart."""

    job_id: int
    pid: int  # the runner's pid == its process group id (it is a session leader)
    job_dir: str
    started_at: float  # epoch seconds
    # Kernel start time of the runner (clock ticks since boot, Linux only). Unlike wall-clock
    # time it cannot drift, so it identifies the process exactly and defeats pid reuse.
    start_ticks: int | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "job_id": self.job_id,
                "pid": self.pid,
                "job_dir": self.job_dir,
                "started_at": self.started_at,
                "start_ticks": self.start_ticks,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, s: str) -> ExecutionHandle:
        try:
            data: Any = json.loads(s)
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid execution handle JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError("invalid execution handle: expected a JSON object")
        job_id = _require_int(data, "job_id")
        pid = _require_int(data, "pid")
        job_dir = data.get("job_dir")
        if not isinstance(job_dir, str) or not job_dir:
            raise ValueError("invalid execution handle: 'job_dir' must be a non-empty string")
        started_at = data.get("started_at")
        if isinstance(started_at, bool) or not isinstance(started_at, int | float):
            raise ValueError("invalid execution handle: 'started_at' must be a number")
        ticks = data.get("start_ticks")
        if ticks is not None and (isinstance(ticks, bool) or not isinstance(ticks, int)):
            raise ValueError("invalid execution handle: 'start_ticks' must be an integer or null")
        return cls(
            job_id=job_id,
            pid=pid,
            job_dir=job_dir,
            started_at=float(started_at),
            start_ticks=ticks,
        )


def _require_int(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    # bool is an int subclass; a stored `true` is corruption, not a pid.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"invalid execution handle: {key!r} must be an integer")
    return value


class ExecutionState(StrEnum):
    RUNNING = "running"
    EXITED = "exited"
    FAILED_TO_START = "failed_to_start"
    LOST = "lost"


@dataclass(frozen=True)
class ExecutionStatus:
    state: ExecutionState
    exit_code: int | None = None  # for EXITED: returncode; negative N if killed by signal N
    reason: str | None = None  # human reason for FAILED_TO_START / LOST
    ended_at: float | None = None


class LaunchError(Exception):
    """The job could not be launched at all (reason in str())."""


@runtime_checkable
class ExecutorBackend(Protocol):
    name: str

    def start(self, spec: LaunchSpec) -> ExecutionHandle:
        """Launch the job; raises LaunchError if it cannot even be attempted."""
        ...

    def poll(self, handle: ExecutionHandle) -> ExecutionStatus: ...

    def kill(self, handle: ExecutionHandle) -> None:
        """Kill the job's whole process group; idempotent, never raises if already gone."""
        ...

    def find(self, job_id: int) -> ExecutionHandle | None:
        """The handle of this job's latest launch, from the backend's own records: for a
        controller that stopped between launching a job and recording its handle."""
        ...

    def log_path(self, job_id: int, stream: LogStream) -> Path: ...
