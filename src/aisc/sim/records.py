"""What flows through the simulator: trace jobs in, per-job records and a result out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class TraceJob:
    job_id: int  # 1-based row order in the trace
    submit_s: float  # seconds since the trace's first submission
    duration_s: float  # what the job really ran (the scheduler never sees it, only a limit)
    gpus: int
    project: str  # a virtual cluster, a team, a funded project
    gpu_model: str | None = None  # when the trace says which model the job needs


@dataclass
class Trace:
    name: str
    jobs: list[TraceJob]
    start_time: datetime | None = None  # wall-clock time of submit_s == 0, when the trace has it

    @property
    def gpu_seconds(self) -> float:
        return sum(j.gpus * j.duration_s for j in self.jobs)


@dataclass
class JobRecord:
    job_id: int
    project: str
    gpus: int  # as placed (a multi-node job is rounded up to whole nodes)
    requested_gpus: int
    submit_s: float
    start_s: float  # of the run that completed
    end_s: float
    duration_s: float  # true duration of one complete run
    preemptions: int = 0
    lost_gpu_seconds: float = 0.0  # work thrown away by preemptions

    @property
    def wait_s(self) -> float:
        """From submission to the start of the run that completed."""
        return self.start_s - self.submit_s

    @property
    def jct_s(self) -> float:
        """Job completion time: submission to end."""
        return self.end_s - self.submit_s


@dataclass(frozen=True)
class MonthlySubsidy:
    month: str  # YYYY-MM
    subsidy_cents: int
    charge_cents: int


@dataclass
class MoneySummary:
    fund_total_cents: int
    rate_bp: int
    cents_per_gpu_hour: int
    months: list[MonthlySubsidy]
    exhaustion_date: str | None  # forecast at the simulated burn rate; None if it lasts

    @property
    def subsidy_cents(self) -> int:
        return sum(m.subsidy_cents for m in self.months)


@dataclass
class SimResult:
    policy: str
    trace_name: str
    total_gpus: int
    records: list[JobRecord]
    entitlements: dict[str, float]  # project -> entitled share, summing to 1
    busy_series: list[tuple[float, int]] = field(default_factory=list)  # (t, busy GPUs) steps
    wall_s: float = 0.0
    money: MoneySummary | None = None
    start_time: datetime | None = None
