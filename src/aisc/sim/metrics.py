"""Numbers that compare one simulated policy run with another: waits, completion times,
utilisation, fairness against entitlements, preemption cost and, when money was modelled,
the subsidy spent.

Definitions, shared by every function here:

* A job's *used* GPU-seconds are ``gpus x (end_s - start_s)`` of the run that completed plus
  ``lost_gpu_seconds`` thrown away by preemptions: both occupied the cluster.
* The *makespan* runs from the first submission to the last end.
* ``utilisation`` = used GPU-seconds / (total_gpus x makespan).
* A project's *share* is its fraction of all used GPU-seconds; fairness compares shares with
  entitlements (Jain's index over share / entitlement, and the largest absolute gap).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from aisc.sim.records import JobRecord, SimResult

Value = float | int | str | None
Summary = dict[str, Value]
ProjectShare = dict[str, str | float | int]

#: Runs shorter than this count as this long in the bounded slowdown, so that a 1-second job
#: waiting a minute does not dominate the average.
SLOWDOWN_BOUND_S = 10.0

_PERCENTILES = (50.0, 95.0, 99.0)


def used_gpu_seconds(record: JobRecord) -> float:
    """GPU-seconds the job occupied: its completed run plus the work preemptions threw away."""
    return record.gpus * max(0.0, record.end_s - record.start_s) + record.lost_gpu_seconds


def makespan_s(records: Iterable[JobRecord]) -> float:
    recs = list(records)
    if not recs:
        return 0.0
    return max(r.end_s for r in recs) - min(r.submit_s for r in recs)


def _require_records(result: SimResult) -> None:
    if not result.records:
        raise ValueError(
            f"policy {result.policy!r} on trace {result.trace_name!r} has no job records: "
            "nothing to summarise"
        )


def _percentiles(values: np.ndarray) -> tuple[float, float, float]:
    p50, p95, p99 = np.percentile(values, _PERCENTILES, method="linear")
    return float(p50), float(p95), float(p99)


def _used_by_project(records: Iterable[JobRecord]) -> tuple[dict[str, float], dict[str, int]]:
    used: dict[str, float] = {}
    jobs: dict[str, int] = {}
    for r in records:
        used[r.project] = used.get(r.project, 0.0) + used_gpu_seconds(r)
        jobs[r.project] = jobs.get(r.project, 0) + 1
    return used, jobs


def project_shares(result: SimResult) -> list[ProjectShare]:
    """Per project (entitled or seen in the records), sorted by name: ``project``,
    ``entitlement``, ``share`` (fraction of all used GPU-seconds), ``gpu_hours`` and ``jobs``."""
    used, jobs = _used_by_project(result.records)
    total = sum(used.values())
    projects = sorted(set(result.entitlements) | set(used))
    return [
        {
            "project": p,
            "entitlement": float(result.entitlements.get(p, 0.0)),
            "share": used.get(p, 0.0) / total if total > 0 else 0.0,
            "gpu_hours": used.get(p, 0.0) / 3600.0,
            "jobs": jobs.get(p, 0),
        }
        for p in projects
    ]


def _fairness(result: SimResult) -> tuple[float | None, float | None]:
    """(Jain's index over share / entitlement for entitled projects, max |share - entitlement|
    over all projects); both None when no GPU-seconds were used at all."""
    shares = project_shares(result)
    if sum(float(s["gpu_hours"]) for s in shares) <= 0:
        return None, None
    deviation = max(abs(float(s["share"]) - float(s["entitlement"])) for s in shares)
    x = np.array(
        [float(s["share"]) / float(s["entitlement"]) for s in shares if float(s["entitlement"]) > 0]
    )
    # Undefined (None) when no project is entitled or no entitled project used anything.
    jain = float(x.sum() ** 2 / (x.size * np.square(x).sum())) if np.any(x > 0) else None
    return jain, float(deviation)


def summarise(result: SimResult) -> Summary:
    """One policy run as flat metrics (see the module docstring for the definitions)."""
    _require_records(result)
    recs = result.records
    waits = np.array([r.wait_s for r in recs], dtype=float)
    jcts = np.array([r.jct_s for r in recs], dtype=float)
    runs = np.array([r.duration_s for r in recs], dtype=float)
    slowdown = np.maximum(1.0, jcts / np.maximum(runs, SLOWDOWN_BOUND_S))

    span = makespan_s(recs)
    used = sum(used_gpu_seconds(r) for r in recs)
    capacity = result.total_gpus * span
    # A consistent schedule never exceeds capacity; the clamp only absorbs float rounding.
    utilisation = min(1.0, used / capacity) if capacity > 0 else 0.0
    jain, deviation = _fairness(result)
    w50, w95, w99 = _percentiles(waits)
    j50, j95, j99 = _percentiles(jcts)

    summary: Summary = {
        "trace": result.trace_name,
        "total_gpus": result.total_gpus,
        "jobs": len(recs),
        "utilisation": utilisation,
        "makespan_s": span,
        "gpu_hours": used / 3600.0,
        "avg_wait_s": float(waits.mean()),
        "median_wait_s": w50,
        "p95_wait_s": w95,
        "p99_wait_s": w99,
        "max_wait_s": float(waits.max()),
        "avg_jct_s": float(jcts.mean()),
        "median_jct_s": j50,
        "p95_jct_s": j95,
        "p99_jct_s": j99,
        "avg_bounded_slowdown": float(slowdown.mean()),
        "jain": jain,
        "max_share_deviation": deviation,
        "preemptions": sum(r.preemptions for r in recs),
        "lost_gpu_hours": sum(r.lost_gpu_seconds for r in recs) / 3600.0,
        "wall_s": result.wall_s,
        "jobs_per_s": len(recs) / result.wall_s if result.wall_s > 0 else 0.0,
    }
    if result.money is not None:
        cents = result.money.subsidy_cents
        summary["subsidy_cents"] = cents
        summary["subsidy_hkd"] = cents / 100.0  # display only; money stays in integer cents
        summary["fund_total_cents"] = result.money.fund_total_cents
        summary["fund_exhaustion"] = result.money.exhaustion_date
    return summary


def _window(result: SimResult) -> tuple[float, float] | None:
    if result.records:
        return (
            min(r.submit_s for r in result.records),
            max(r.end_s for r in result.records),
        )
    if result.busy_series:
        ts = [t for t, _ in result.busy_series]
        return min(ts), max(ts)
    return None


def utilisation_series(result: SimResult, buckets: int = 200) -> list[tuple[float, float]]:
    """Average busy fraction of the cluster in ``buckets`` equal time buckets over the makespan
    (or over the busy series' own span when there are no records).

    ``busy_series`` is read as a step function: each ``(t, busy)`` holds until the next point
    (the last holds for ever, and busy is 0 before the first). Averages are exact integrals of
    that function, not samples. Returns ``(bucket start s, fraction)`` pairs; empty when the
    window has no length or the cluster no GPUs."""
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, got {buckets}")
    window = _window(result)
    if window is None or result.total_gpus <= 0:
        return []
    lo, hi = window
    if hi <= lo:
        return []
    edges = np.linspace(lo, hi, buckets + 1)
    if not np.all(np.diff(edges) > 0):  # a window too short for floats to split: one bucket
        edges = np.array([lo, hi])
    points = sorted(result.busy_series, key=lambda p: p[0])  # stable: the last of a tie wins
    if not points:
        return [(float(e), 0.0) for e in edges[:-1]]
    ts = np.array([t for t, _ in points], dtype=float)
    busy = np.array([b for _, b in points], dtype=float)
    # Integral F of the step function at each breakpoint, with a point before the first step
    # (F = 0, busy 0 before it) and one past the last (the last level carried on).
    start = min(float(ts[0]), lo)
    end = max(float(ts[-1]), hi)
    cum = np.concatenate(([0.0], np.cumsum(busy[:-1] * np.diff(ts))))
    xp = np.concatenate(([start], ts, [end]))
    fp = np.concatenate(([0.0], cum, [cum[-1] + busy[-1] * (end - ts[-1])]))
    integral = np.interp(edges, xp, fp)  # F is piecewise linear, so this is exact
    fractions = np.diff(integral) / (np.diff(edges) * result.total_gpus)
    return [
        (float(e), float(min(1.0, max(0.0, f)))) for e, f in zip(edges[:-1], fractions, strict=True)
    ]


def wait_cdf(result: SimResult) -> tuple[list[float], list[float]]:
    """Sorted waits and the fraction of jobs that waited at most that long (ends at 1.0);
    two empty lists when there are no records."""
    waits = sorted(r.wait_s for r in result.records)
    n = len(waits)
    return waits, [(i + 1) / n for i in range(n)]
