"""What-if inputs: size a cluster from a capacity target, scale a trace to a target load, and put
the simulated usage into money: subsidy spent per month and when the fund runs out."""

from __future__ import annotations

import calendar
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from aisc.domain.money import PriceSegment, charge_cents, split_charge
from aisc.sim.engine import SimCluster
from aisc.sim.records import MoneySummary, MonthlySubsidy, SimResult, Trace

# Peak dense BF16 tensor throughput per GPU, in PFLOPS, from the vendors' data sheets. Capacity
# figures quoted for a centre (e.g. "3,000 PFLOPS") are often FP8 or with sparsity, which are
# 2x or 4x these: say which with --pflops-per-gpu when sizing.
PFLOPS_PER_GPU = {
    "V100": 0.125,
    "A100": 0.312,
    "A800": 0.312,
    "H100": 0.989,
    "H800": 0.989,
    "H200": 0.989,
    "H20": 0.148,
    "B200": 2.25,
}


def cluster_for_capacity(
    pflops: float,
    gpu_model: str = "H800",
    gpus_per_node: int = 8,
    pflops_per_gpu: float | None = None,
) -> SimCluster:
    """Enough whole nodes of `gpu_model` to reach `pflops` of peak throughput."""
    per_gpu = pflops_per_gpu if pflops_per_gpu is not None else PFLOPS_PER_GPU.get(gpu_model)
    if per_gpu is None:
        known = ", ".join(sorted(PFLOPS_PER_GPU))
        raise ValueError(
            f"no PFLOPS figure for {gpu_model}: give --pflops-per-gpu, or use one of {known}"
        )
    if pflops <= 0 or per_gpu <= 0:
        raise ValueError("capacity and PFLOPS per GPU must be positive")
    nodes = math.ceil(pflops / per_gpu / gpus_per_node)
    return SimCluster(nodes=nodes, gpus_per_node=gpus_per_node, gpu_model=gpu_model)


def offered_load(trace: Trace, total_gpus: int) -> float:
    """The trace's GPU-time over what the cluster offers across the submission span."""
    span = max((j.submit_s for j in trace.jobs), default=0.0) or 1.0
    return trace.gpu_seconds / (total_gpus * span)


def scale_to_load(trace: Trace, total_gpus: int, target: float) -> Trace:
    """Stretch or squeeze arrival times (durations unchanged) to reach a target offered load."""
    if target <= 0:
        raise ValueError("a target load must be positive")
    factor = offered_load(trace, total_gpus) / target
    jobs = [replace(j, submit_s=j.submit_s * factor) for j in trace.jobs]
    return Trace(f"{trace.name} (load {target:g})", jobs, trace.start_time)


def money(
    result: SimResult,
    fund_total_cents: int,
    cents_per_gpu_hour: int,
    rate_bp: int,
    start: datetime | None = None,
) -> MoneySummary:
    """Each completed job billed per second at the list price, split at the subsidy rate, and
    booked in the month it ended; the fund's exhaustion forecast at the simulated burn rate."""
    origin = start or result.start_time or datetime(2026, 1, 1, tzinfo=UTC)
    months: dict[str, list[int]] = {}
    for record in result.records:
        seconds = math.ceil(record.end_s - record.start_s)
        charge = charge_cents([PriceSegment(record.gpus * seconds, cents_per_gpu_hour)])
        split = split_charge(charge, rate_bp)
        month = (origin + timedelta(seconds=record.end_s)).strftime("%Y-%m")
        totals = months.setdefault(month, [0, 0])
        totals[0] += split.subsidy
        totals[1] += split.charge
    ordered = [MonthlySubsidy(m, s, c) for m, (s, c) in sorted(months.items())]
    return MoneySummary(
        fund_total_cents=fund_total_cents,
        rate_bp=rate_bp,
        cents_per_gpu_hour=cents_per_gpu_hour,
        months=ordered,
        exhaustion_date=_exhaustion(ordered, fund_total_cents, origin, result),
    )


def _exhaustion(
    months: list[MonthlySubsidy], fund: int, origin: datetime, result: SimResult
) -> str | None:
    spent = 0
    for m in months:  # run out within the simulated period
        spent += m.subsidy_cents
        if spent >= fund:
            year, month = (int(x) for x in m.month.split("-"))
            return f"{m.month}-{calendar.monthrange(year, month)[1]:02d}"
    span_s = max((r.end_s for r in result.records), default=0.0)
    if spent <= 0 or span_s <= 0:
        return None
    rate_per_s = spent / span_s  # after the simulated period, at its average burn rate
    remaining_s = (fund - spent) / rate_per_s
    try:
        return (origin + timedelta(seconds=span_s + remaining_s)).date().isoformat()
    except OverflowError:
        return None  # the fund outlasts the calendar
