"""Simulator metrics and reports, checked against numbers worked out by hand."""

from __future__ import annotations

import csv
import json
import math
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from aisc.sim.metrics import project_shares, summarise, utilisation_series, wait_cdf
from aisc.sim.records import JobRecord, MoneySummary, MonthlySubsidy, SimResult
from aisc.sim.report import (
    FILES,
    JOB_COLUMNS,
    fmt_duration,
    rich_table,
    summaries_of,
    write_all,
)


def rec(
    job_id: int,
    project: str,
    gpus: int,
    submit: float,
    start: float,
    end: float,
    *,
    duration: float | None = None,
    preemptions: int = 0,
    lost: float = 0.0,
) -> JobRecord:
    return JobRecord(
        job_id=job_id,
        project=project,
        gpus=gpus,
        requested_gpus=gpus,
        submit_s=submit,
        start_s=start,
        end_s=end,
        duration_s=end - start if duration is None else duration,
        preemptions=preemptions,
        lost_gpu_seconds=lost,
    )


def two_jobs(
    entitlements: dict[str, float] | None = None,
    *,
    money: MoneySummary | None = None,
    wall_s: float = 0.0,
) -> SimResult:
    """2 GPUs; job 1 (project a) runs 0-100, job 2 (project b) waits 10 s then runs 10-110."""
    return SimResult(
        policy="fifo",
        trace_name="hand",
        total_gpus=2,
        records=[rec(1, "a", 1, 0, 0, 100), rec(2, "b", 1, 0, 10, 110)],
        entitlements=entitlements or {"a": 0.5, "b": 0.5},
        busy_series=[(0.0, 1), (10.0, 2), (100.0, 1), (110.0, 0)],
        wall_s=wall_s,
        money=money,
    )


# -- summarise --------------------------------------------------------------------------------


def test_two_jobs_by_hand() -> None:
    s = summarise(two_jobs(wall_s=0.5))
    assert s["jobs"] == 2
    assert s["makespan_s"] == 110
    assert s["utilisation"] == pytest.approx(200 / 220)
    assert s["avg_wait_s"] == pytest.approx(5.0)
    assert s["median_wait_s"] == pytest.approx(5.0)
    assert s["p95_wait_s"] == pytest.approx(9.5)  # linear: 0 + 0.95 x 10
    assert s["p99_wait_s"] == pytest.approx(9.9)
    assert s["avg_jct_s"] == pytest.approx(105.0)
    assert s["median_jct_s"] == pytest.approx(105.0)
    assert s["p95_jct_s"] == pytest.approx(109.5)
    assert s["p99_jct_s"] == pytest.approx(109.9)
    assert s["avg_bounded_slowdown"] == pytest.approx((1.0 + 1.1) / 2)
    assert s["jain"] == pytest.approx(1.0)
    assert s["max_share_deviation"] == pytest.approx(0.0)
    assert s["preemptions"] == 0
    assert s["lost_gpu_hours"] == 0.0
    assert s["wall_s"] == 0.5
    assert s["jobs_per_s"] == pytest.approx(4.0)
    assert "subsidy_cents" not in s
    assert "fund_exhaustion" not in s


def test_unequal_entitlements_lower_jain() -> None:
    # shares 0.5/0.5 against 0.75/0.25: x = (2/3, 2) -> (8/3)^2 / (2 x (4/9 + 4)) = 0.8
    s = summarise(two_jobs({"a": 0.75, "b": 0.25}))
    assert s["jain"] == pytest.approx(0.8)
    assert s["max_share_deviation"] == pytest.approx(0.25)


def test_entitled_project_that_never_ran_counts() -> None:
    # c is entitled to a third and got nothing: x = (1.5, 1.5, 0) -> 9 / (3 x 4.5) = 2/3
    s = summarise(two_jobs({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}))
    assert s["jain"] == pytest.approx(2 / 3)
    assert s["max_share_deviation"] == pytest.approx(1 / 3)
    shares = {p["project"]: p for p in project_shares(two_jobs({"a": 0.5, "c": 0.5}))}
    assert set(shares) == {"a", "b", "c"}  # b is unentitled but ran
    assert shares["b"]["entitlement"] == 0.0
    assert shares["b"]["share"] == pytest.approx(0.5)
    assert shares["c"]["jobs"] == 0
    assert shares["a"]["gpu_hours"] == pytest.approx(100 / 3600)


def test_preempted_work_counts_as_used_and_lost() -> None:
    # Job 2 ran 2 GPUs x 20 s before being preempted, then ran 40-60 on 2 GPUs.
    result = SimResult(
        policy="preempt",
        trace_name="hand",
        total_gpus=2,
        records=[
            rec(1, "a", 2, 20, 20, 40),
            rec(2, "b", 2, 0, 40, 60, preemptions=1, lost=40.0),
        ],
        entitlements={"a": 0.5, "b": 0.5},
    )
    s = summarise(result)
    assert s["makespan_s"] == 60
    assert s["utilisation"] == pytest.approx((40 + 40 + 40) / (2 * 60))
    assert s["preemptions"] == 1
    assert s["lost_gpu_hours"] == pytest.approx(40 / 3600)
    # b used 80 of 120 GPU-seconds
    assert s["max_share_deviation"] == pytest.approx(2 / 3 - 0.5)


def test_bounded_slowdown_floors_short_runs_at_ten_seconds() -> None:
    result = SimResult(
        policy="p",
        trace_name="hand",
        total_gpus=1,
        records=[rec(1, "a", 1, 0, 28, 30), rec(2, "a", 1, 0, 0, 1)],
        entitlements={"a": 1.0},
    )
    # job 1: jct 30 / max(2, 10) = 3; job 2: 1 / 10 -> floored at 1
    assert summarise(result)["avg_bounded_slowdown"] == pytest.approx(2.0)


def test_money_keys() -> None:
    money = MoneySummary(
        fund_total_cents=10_000_000,
        rate_bp=7000,
        cents_per_gpu_hour=2000,
        months=[MonthlySubsidy("2024-01", 123_456, 176_366), MonthlySubsidy("2024-02", 1, 2)],
        exhaustion_date="2031-05-17",
    )
    s = summarise(two_jobs(money=money))
    assert s["subsidy_cents"] == 123_457
    assert isinstance(s["subsidy_cents"], int)
    assert s["subsidy_hkd"] == pytest.approx(1234.57)
    assert s["fund_exhaustion"] == "2031-05-17"
    money.exhaustion_date = None
    assert summarise(two_jobs(money=money))["fund_exhaustion"] is None


def test_zero_wall_time_gives_zero_speed() -> None:
    assert summarise(two_jobs())["jobs_per_s"] == 0.0


def test_empty_records_is_a_clear_error() -> None:
    empty = SimResult(policy="p", trace_name="t", total_gpus=4, records=[], entitlements={})
    with pytest.raises(ValueError, match="no job records"):
        summarise(empty)
    assert wait_cdf(empty) == ([], [])


# -- utilisation never above 1 ----------------------------------------------------------------

_job = st.tuples(
    st.floats(0, 50),  # gap before the job's first use of its slot
    st.floats(0, 30),  # how long it waited in the queue before that
    st.one_of(st.just(0.0), st.floats(0.5, 40)),  # lost run before a preemption
    st.floats(0, 20),  # gap between the lost run and the completing one
    st.floats(0, 100),  # the completing run
)


@st.composite
def schedules(draw: st.DrawFn) -> SimResult:
    """Jobs packed onto disjoint GPU slots, never overlapping within a slot: busy <= total."""
    total = draw(st.integers(1, 16))
    widths = draw(st.lists(st.integers(1, 4), min_size=1, max_size=5))
    records: list[JobRecord] = []
    events: list[tuple[float, int]] = []
    used_gpus = 0
    job_id = 0
    for width in widths:
        if used_gpus + width > total:
            break
        used_gpus += width
        cursor = 0.0
        for gap, queued, lost, pause, run in draw(st.lists(_job, min_size=1, max_size=6)):
            job_id += 1
            first_use = cursor + gap
            submit = max(0.0, first_use - queued)
            if lost:
                events += [(first_use, width), (first_use + lost, -width)]
                start = first_use + lost + pause
            else:
                start = first_use
            end = start + run
            events += [(start, width), (end, -width)]
            records.append(
                rec(
                    job_id,
                    draw(st.sampled_from(["a", "b", "c"])),
                    width,
                    submit,
                    start,
                    end,
                    preemptions=1 if lost else 0,
                    lost=width * lost,
                )
            )
            cursor = end
    if not records:  # the first slot was wider than the cluster
        records.append(rec(1, "a", total, 0.0, 0.0, 10.0))
        events += [(0.0, total), (10.0, -total)]
    busy, series = 0, []
    for t, delta in sorted(events, key=lambda e: (e[0], e[1])):
        busy += delta
        series.append((t, busy))
    return SimResult(
        policy="random",
        trace_name="prop",
        total_gpus=total,
        records=records,
        entitlements={"a": 0.5, "b": 0.3, "c": 0.2},
        busy_series=series,
    )


@settings(max_examples=150, deadline=None)
@given(schedules())
def test_utilisation_never_above_one(result: SimResult) -> None:
    assert max(b for _, b in result.busy_series) <= result.total_gpus
    s = summarise(result)
    u = float(s["utilisation"])  # type: ignore[arg-type]
    assert 0.0 <= u <= 1.0
    series = utilisation_series(result, buckets=37)
    assert all(0.0 <= f <= 1.0 for _, f in series)
    if series:  # equal buckets over the makespan: their mean is the overall utilisation
        assert sum(f for _, f in series) / len(series) == pytest.approx(u, abs=1e-9)
    jain = s["jain"]
    assert jain is None or 1 / 3 - 1e-12 <= float(jain) <= 1.0 + 1e-12


def test_a_window_too_short_to_split_is_one_bucket() -> None:
    # found by the property above: a job of 5e-324 s (the smallest float) spans the makespan
    tiny = SimResult(
        policy="p",
        trace_name="tiny",
        total_gpus=1,
        records=[rec(1, "a", 1, 0, 0, 5e-324)],
        entitlements={"a": 1.0},
        busy_series=[(0.0, 1), (5e-324, 0)],
    )
    assert utilisation_series(tiny, buckets=37) == [(0.0, 1.0)]
    assert summarise(tiny)["utilisation"] == 1.0


# -- series and CDF ---------------------------------------------------------------------------


def known_steps() -> SimResult:
    """4 GPUs: all busy 0-5, idle 5-10, half busy 10-20; the jobs span 0-20."""
    return SimResult(
        policy="p",
        trace_name="steps",
        total_gpus=4,
        records=[rec(1, "a", 4, 0, 0, 5), rec(2, "a", 2, 0, 10, 20)],
        entitlements={"a": 1.0},
        busy_series=[(0.0, 4), (5.0, 0), (10.0, 2), (20.0, 0)],
    )


def test_utilisation_series_averages_exactly() -> None:
    result = known_steps()
    series = utilisation_series(result, buckets=4)
    assert [t for t, _ in series] == pytest.approx([0.0, 5.0, 10.0, 15.0])
    assert [f for _, f in series] == pytest.approx([1.0, 0.0, 0.5, 0.5])
    assert [f for _, f in utilisation_series(result, buckets=2)] == pytest.approx([0.5, 0.5])
    # Edges at 0, 6.67, 13.33, 20: 20/26.67, (2 x 3.33)/26.67, (2 x 6.67)/26.67
    assert [f for _, f in utilisation_series(result, buckets=3)] == pytest.approx([0.75, 0.25, 0.5])
    assert [f for _, f in utilisation_series(result, buckets=1)] == pytest.approx([0.5])
    assert summarise(result)["utilisation"] == pytest.approx(0.5)


def test_utilisation_series_handles_ties_and_unsorted_points() -> None:
    result = known_steps()
    # Two events at t=5 (4 -> 1 -> 0) and the points out of order: same function.
    result.busy_series = [(10.0, 2), (0.0, 4), (5.0, 1), (5.0, 0), (20.0, 0)]
    assert [f for _, f in utilisation_series(result, buckets=4)] == pytest.approx(
        [1.0, 0.0, 0.5, 0.5]
    )
    with pytest.raises(ValueError):
        utilisation_series(result, buckets=0)


def test_wait_cdf_is_monotone_and_ends_at_one() -> None:
    result = two_jobs()
    result.records.append(rec(3, "a", 1, 5, 12, 20))  # wait 7
    waits, frac = wait_cdf(result)
    assert waits == [0.0, 7.0, 10.0]
    assert frac == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert all(a <= b for a, b in pairwise(waits))
    assert all(a < b for a, b in pairwise(frac))


# -- reports ----------------------------------------------------------------------------------


def test_fmt_duration() -> None:
    assert fmt_duration(0) == "0 s"
    assert fmt_duration(2.5) == "2.5 s"
    assert fmt_duration(45) == "45 s"
    assert fmt_duration(750) == "12.5 min"
    assert fmt_duration(3.2 * 3600) == "3.2 h"
    assert fmt_duration(5 * 86400) == "5.0 d"


def _money(exhaustion: str | None) -> MoneySummary:
    return MoneySummary(
        fund_total_cents=5_000_000,
        rate_bp=7000,
        cents_per_gpu_hour=2000,
        months=[
            MonthlySubsidy("2024-01", 900_000, 1_285_714),
            MonthlySubsidy("2024-02", 1_100_000, 1_571_428),
        ],
        exhaustion_date=exhaustion,
    )


def test_rich_table_fits_100_columns() -> None:
    results = [two_jobs(money=_money("2024-05-02")), known_steps()]
    results[1].policy = "fair-share"
    console = Console(width=100, record=True, color_system=None)
    console.print(rich_table(summaries_of(results)))
    text = console.export_text()
    assert all(len(line) <= 100 for line in text.splitlines())
    assert "fifo" in text and "fair-share" in text
    assert "90.9%" in text  # utilisation of two_jobs
    assert "0.0 pp" in text  # max share gap
    assert "5 s" in text  # mean wait
    assert "never" in text or "—" in text  # the second run has no money


def test_duplicate_policies_rejected() -> None:
    with pytest.raises(ValueError, match="twice"):
        summaries_of([two_jobs(), two_jobs()])


REQUIRED = (
    "jobs",
    "utilisation",
    "avg_wait_s",
    "p99_wait_s",
    "avg_jct_s",
    "jain",
    "max_share_deviation",
    "wall_s",
)


def test_write_all_produces_every_file(tmp_path: Path) -> None:
    fifo = two_jobs(money=_money("2024-05-02"), wall_s=0.25)
    fifo.start_time = datetime(2024, 1, 1, 8, 0)
    fair = two_jobs({"a": 0.75, "b": 0.25}, money=_money(None))
    fair.policy = "fair<share>"  # escaped in the HTML
    out = tmp_path / "report"
    paths = write_all([fifo, fair], out)

    assert set(paths) == set(FILES)
    for name, path in paths.items():
        assert path == out / name and path.stat().st_size > 0
    for name in ("utilisation.png", "wait_cdf.png", "fund_burndown.png"):
        assert paths[name].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    html = paths["report.html"].read_text(encoding="utf-8")
    assert "fifo" in html and "fair&lt;share&gt;" in html and "fair<share>" not in html
    assert html.count("data:image/png;base64,") == 3
    assert "hand" in html and "GPUs" in html

    data = json.loads(paths["summary.json"].read_text(encoding="utf-8"))
    assert list(data) == ["fifo", "fair<share>"]
    for metrics in data.values():
        assert all(key in metrics for key in REQUIRED)
    assert data["fifo"]["utilisation"] == pytest.approx(200 / 220)
    assert data["fifo"]["subsidy_cents"] == 2_000_000
    assert data["fair<share>"]["fund_exhaustion"] is None
    assert data["fair<share>"]["jain"] == pytest.approx(0.8)

    with paths["summary.csv"].open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["policy"] for r in rows] == ["fifo", "fair<share>"]
    assert float(rows[0]["avg_wait_s"]) == 5.0
    with paths["jobs.csv"].open(newline="") as fh:
        reader = csv.DictReader(fh)
        jobs = list(reader)
    assert tuple(reader.fieldnames or ()) == JOB_COLUMNS
    assert len(jobs) == 4
    assert jobs[1]["policy"] == "fifo" and float(jobs[1]["wait_s"]) == 10.0


def test_write_all_without_money_or_jobs_in_series(tmp_path: Path) -> None:
    result = known_steps()
    result.busy_series = []  # no series recorded: the utilisation plot shows an idle cluster
    paths = write_all([result], tmp_path)
    data = json.loads(paths["summary.json"].read_text(encoding="utf-8"))
    assert "subsidy_cents" not in data["p"]
    assert paths["fund_burndown.png"].read_bytes().startswith(b"\x89PNG")
    assert not math.isnan(data["p"]["utilisation"])
