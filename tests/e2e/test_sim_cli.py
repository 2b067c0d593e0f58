"""`aisc sim run` and `aisc sim compare` end to end: CSV in, table, JSON and report files out."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from aisc.cli.main import app

REAL_PHILLY = Path(__file__).resolve().parents[3] / "shared" / "traces" / "philly.csv"
METRICS = (
    "jobs",
    "utilisation",
    "avg_wait_s",
    "p99_wait_s",
    "avg_jct_s",
    "jain",
    "max_share_deviation",
    "wall_s",
)
REPORT_FILES = (
    "report.html",
    "utilisation.png",
    "wait_cdf.png",
    "fund_burndown.png",
    "summary.csv",
    "jobs.csv",
)
GENERIC = "submit=t,duration=d,gpus=g,project=team"

# a Philly-format trace: two virtual clusters, a queue that builds up on a small cluster
PHILLY_ROWS = [
    ("2017-10-09 07:00:00", 3600, 8, "vc1"),
    ("2017-10-09 07:00:30", 1800, 8, "vc1"),
    ("2017-10-09 07:01:00", 600, 4, "vc2"),
    ("2017-10-09 07:02:00", 60, 1, "vc2"),
    ("2017-10-09 07:05:00", 7200, 16, "vc1"),
    ("2017-10-09 07:10:00", 300, 2, "vc2"),
    ("2017-10-09 07:20:00", 900, 8, "vc2"),
    ("2017-10-09 08:00:00", 120, 1, "vc1"),
]


def sim(*args: str | Path) -> Result:
    return CliRunner().invoke(app, ["sim", *map(str, args)], env={"COLUMNS": "200"})


def flat(text: str) -> str:
    """Rich wraps long lines: compare text with runs of whitespace as one space."""
    return " ".join(text.split())


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    assert result.exception is None
    return result


def failed(result: Result, *fragments: str) -> str:
    """Exit code 1, one line on stderr naming every fragment, and no traceback anywhere."""
    assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit)  # a clean exit, not an escaped exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stdout + result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


@pytest.fixture
def philly(tmp_path: Path) -> Path:
    path = tmp_path / "philly-small.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["timestamp", "duration", "num_gpus", "gpu_time", "cluster"])
        for when, duration, gpus, vc in PHILLY_ROWS:
            writer.writerow([when, f"{duration}.0", gpus, f"{duration * gpus}.0", vc])
    return path


@pytest.fixture
def generic(tmp_path: Path) -> Path:
    """Columns the user names with --columns; submit times in seconds, not from zero."""
    path = tmp_path / "jobs.csv"
    path.write_text(
        "t,d,g,team,note\n"
        "1000,3600,8,red,first\n"
        "1010,600,4,blue,\n"
        "1020,60,1,blue,x\n"
        "1500,1200,12,red,two nodes\n"
        "2000,30,2,green,\n"
        "4600,100,1,green,\n",
        encoding="utf-8",
    )
    return path


def check_summary(path: Path, policies: list[str]) -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    assert list(data) == policies
    for policy in policies:
        missing = [m for m in METRICS if m not in data[policy]]
        assert not missing, (policy, missing)
        assert 0 <= data[policy]["utilisation"] <= 1
        assert 0 < data[policy]["jain"] <= 1
        assert data[policy]["avg_jct_s"] >= data[policy]["avg_wait_s"]
    return data


def check_report(out: Path, policies: list[str], jobs: int) -> None:
    for name in REPORT_FILES:
        assert (out / name).is_file(), name
        assert (out / name).stat().st_size > 0, name
    for name in REPORT_FILES:
        if name.endswith(".png"):
            assert (out / name).read_bytes().startswith(b"\x89PNG")
    with (out / "summary.csv").open(newline="") as fh:
        assert [row["policy"] for row in csv.DictReader(fh)] == policies
    with (out / "jobs.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == jobs * len(policies)
    assert {row["policy"] for row in rows} == set(policies)
    assert "<html" in (out / "report.html").read_text(encoding="utf-8")


ALL = ["fifo", "backfill", "aisc", "srtf"]


def test_compare_writes_json_report_and_table(philly: Path, tmp_path: Path) -> None:
    summary, out = tmp_path / "summary.json", tmp_path / "report"
    result = ok(
        sim(
            "compare",
            philly,
            "--policies",
            ",".join(ALL),
            "--nodes",
            "2",
            "--json",
            summary,
            "--out",
            out,
        )
    )
    data = check_summary(summary, ALL)
    assert all(data[p]["jobs"] == len(PHILLY_ROWS) for p in ALL)
    check_report(out, ALL, len(PHILLY_ROWS))
    text = flat(result.stdout)
    assert f"{len(PHILLY_ROWS)} jobs" in text
    assert "2 x 8 H800 (16 GPUs)" in text
    for label in ("utilisation", "wait, mean", "fairness (Jain)", *ALL):
        assert label in text  # the comparison table
    assert f"summary written to {summary}" in text
    assert "report.html" in text


def test_compare_on_the_real_philly_trace(tmp_path: Path) -> None:
    if not REAL_PHILLY.is_file():
        pytest.skip(f"{REAL_PHILLY} is not here")
    summary, out = tmp_path / "summary.json", tmp_path / "report"
    result = ok(
        sim(
            "compare",
            REAL_PHILLY,
            "--policies",
            ",".join(ALL),
            "--max-jobs",
            "2000",
            "--nodes",
            "8",
            "--json",
            summary,
            "--out",
            out,
        )
    )
    data = check_summary(summary, ALL)
    jobs = {p: data[p]["jobs"] for p in ALL}
    # the same jobs complete under every policy: those that fit on 64 GPUs
    assert len(set(jobs.values())) == 1
    assert 0 < jobs["fifo"] <= 2000
    refused = 2000 - int(jobs["fifo"])
    text = flat(result.stdout)
    assert "2,000 jobs" in text
    assert "8 x 8 H800 (64 GPUs)" in text
    if refused:
        assert f"fifo: {refused} jobs larger than the cluster skipped" in text
    assert all(data[p]["utilisation"] > 0 for p in ALL)
    check_report(out, ALL, int(jobs["fifo"]))


def test_run_with_the_generic_importer(generic: Path, tmp_path: Path) -> None:
    summary = tmp_path / "one.json"
    result = ok(
        sim(
            "run",
            generic,
            "--columns",
            GENERIC,
            "--time-format",
            "seconds",
            "--policy",
            "backfill",
            "--nodes",
            "2",
            "--json",
            summary,
        )
    )
    data = check_summary(summary, ["backfill"])
    assert data["backfill"]["jobs"] == 6
    text = flat(result.stdout)
    # 45,820 GPU-seconds submitted over 3,600 s to 16 GPUs
    assert "jobs: 6 jobs, 13 GPU-hours on 2 x 8 H800 (16 GPUs), offered load 0.80" in text
    assert "skipped" not in text  # 12 GPUs round up to two whole nodes, which the cluster has


def test_run_counts_jobs_too_large_for_the_cluster(generic: Path) -> None:
    result = ok(sim("run", generic, "--columns", GENERIC, "--policy", "fifo", "--nodes", "1"))
    assert "fifo: 1 jobs larger than the cluster skipped" in flat(result.stdout)


def test_pflops_sizes_the_cluster(philly: Path) -> None:
    result = ok(sim("run", philly, "--pflops", "100", "--gpu-model", "H800", "--policy", "fifo"))
    nodes = math.ceil(100 / 0.989 / 8)
    assert f"{nodes} x 8 H800 ({nodes * 8} GPUs)" in flat(result.stdout)
    result = ok(
        sim(
            "run",
            philly,
            "--pflops",
            "100",
            "--gpu-model",
            "MI300X",
            "--pflops-per-gpu",
            "1.3",
            "--gpus-per-node",
            "4",
            "--policy",
            "fifo",
        )
    )
    nodes = math.ceil(100 / 1.3 / 4)
    assert f"{nodes} x 4 MI300X ({nodes * 4} GPUs)" in flat(result.stdout)


def test_load_scales_arrivals(philly: Path, generic: Path) -> None:
    result = ok(sim("run", philly, "--load", "0.5", "--nodes", "4", "--policy", "aisc"))
    assert "offered load 0.50" in flat(result.stdout)
    result = ok(sim("compare", generic, "--columns", GENERIC, "--load", "1.25", "--nodes", "2"))
    assert "offered load 1.25" in flat(result.stdout)


def test_preemption_settings_of_the_aisc_policy(tmp_path: Path) -> None:
    # X runs two 8-GPU jobs on 2 x 8 GPUs, one of them borrowed; Y, entitled to half the
    # cluster, arrives at 1000 and takes the borrowed job's GPUs back
    trace = tmp_path / "borrowing.csv"
    trace.write_text("t,d,g,team\n0,5000,8,x\n0,5000,8,x\n1000,10000,8,y\n", encoding="utf-8")
    common = ["run", trace, "--columns", "submit=t,duration=d,gpus=g,project=team"]

    def summary(*extra: str) -> dict[str, Any]:
        path = tmp_path / f"s{len(list(tmp_path.iterdir()))}.json"
        ok(sim(*common, "--nodes", "2", "--json", path, *extra))
        return check_summary(path, ["aisc"])["aisc"]

    default = summary()
    assert default["preemptions"] == 1
    assert default["lost_gpu_hours"] == pytest.approx(8 * 1000 / 3600)
    later = summary("--preempt-min-runtime", "3000")  # the borrowed job is safe until 3000
    assert later["preemptions"] == 1
    assert later["lost_gpu_hours"] == pytest.approx(8 * 3000 / 3600)
    off = summary("--no-preemption")
    assert off["preemptions"] == 0
    assert off["avg_wait_s"] == pytest.approx(4000 / 3)  # Y waits for X's jobs to end at 5000
    assert default["avg_wait_s"] == pytest.approx(5000 / 3)  # the victim restarts at 5000
    failed(sim(*common, "--preempt-min-runtime", "-5"), "--preempt-min-runtime")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["run", "{philly}", "--policy", "lottery"], ["unknown policy lottery", "fifo"]),
        (["compare", "{philly}", "--policies", "fifo,lottery"], ["unknown policy lottery"]),
        (["compare", "{philly}", "--policies", ","], ["unknown policy (none)"]),
        (["compare", "{philly}", "--policies", "fifo,aisc,fifo"], ["once"]),
        (["run", "{generic}", "--columns", "submit=t,duration"], ["--columns", "duration"]),
        (["run", "{generic}", "--columns", "start=t,duration=d,gpus=g"], ["unknown role"]),
        (
            ["run", "{generic}", "--columns", "submit=t,duration=secs,gpus=g"],
            ["no column 'secs'", "'t', 'd', 'g', 'team', 'note'"],
        ),
        (["run", "{bad_row}", "--columns", GENERIC], ["row 3", "column 'g'", "'four'"]),
        (["run", "{missing}"], ["cannot read", "nope.csv"]),
        (["run", "{missing}", "--columns", GENERIC], ["cannot read", "nope.csv"]),
        (["run", "{philly}", "--limit-factor", "0.5"], ["--limit-factor", "at least 1"]),
        (
            ["run", "{philly}", "--format", "philly", "--columns", GENERIC],
            ["only for the generic format"],
        ),
        (["run", "{philly}", "--format", "pbs"], ["unknown trace format 'pbs'"]),
        (["run", "{philly}", "--max-jobs", "0"], ["--max-jobs"]),
        (["run", "{philly}", "--nodes", "0"], ["at least one node"]),
        (["run", "{philly}", "--pflops", "100", "--gpu-model", "X9"], ["--pflops-per-gpu"]),
        (["run", "{philly}", "--load", "0"], ["positive"]),
        (["run", "{philly}", "--subsidy-rate", "1.5"], ["rate"]),
        (["run", "{philly}", "--price-hkd", "0"], ["positive"]),
        (["run", "{generic}"], ["not a known trace format", "--columns"]),
    ],
)
def test_errors_are_one_line(
    args: list[str], fragments: list[str], philly: Path, generic: Path, tmp_path: Path
) -> None:
    bad_row = tmp_path / "bad.csv"
    bad_row.write_text("t,d,g,team\n0,10,1,a\n5,10,four,b\n", encoding="utf-8")
    paths = {
        "philly": philly,
        "generic": generic,
        "bad_row": bad_row,
        "missing": tmp_path / "nope.csv",
    }
    failed(sim(*(a.format(**paths) for a in args)), *fragments)
