"""Trace readers: Philly, Alibaba openb pods, generic mapped CSV, detection and dispatch."""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aisc.sim.records import Trace
from aisc.sim.traces import (
    TraceError,
    detect_format,
    load_trace,
    parse_columns,
    read_alibaba,
    read_alibaba_with_skipped,
    read_generic,
    read_philly,
)

# CI checks the data out beside the repository: <root>/../shared/traces.
TRACES = Path(__file__).resolve().parents[3] / "shared" / "traces"

PHILLY_HEADER = "timestamp,duration,num_gpus,gpu_time,cluster\n"
ALIBABA_HEADER = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
    "creation_time,deletion_time,scheduled_time\n"
)


def write(tmp_path: Path, name: str, text: str, *, bom: bool = False) -> Path:
    path = tmp_path / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def assert_invariants(trace: Trace) -> None:
    jobs = trace.jobs
    assert jobs
    assert [j.job_id for j in jobs] == list(range(1, len(jobs) + 1))
    assert jobs[0].submit_s == 0
    assert all(a.submit_s <= b.submit_s for a, b in itertools.pairwise(jobs))
    for j in jobs:
        assert isinstance(j.gpus, int) and j.gpus >= 1
        assert math.isfinite(j.duration_s) and j.duration_s >= 0
        assert math.isfinite(j.submit_s) and j.submit_s >= 0
        assert j.project


def raises_at(
    path: Path,
    row: int,
    column: str,
    expected: str,
    read: Callable[[Path], Trace] = read_philly,
) -> TraceError:
    with pytest.raises(TraceError) as info:
        read(path)
    message = str(info.value)
    assert f"{path.name} row {row}, column {column!r}: expected {expected}" in message
    assert info.value.row == row
    assert info.value.column == column
    return info.value


# -- Philly -----------------------------------------------------------------------------------


def test_philly_reads_sorts_and_numbers_jobs(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "philly.csv",
        PHILLY_HEADER
        + "2017-10-09 07:01:55,66.0,1,66.0,vcA\n"
        + "\n"  # blank lines are ignored
        + "2017-10-09 06:13:03,2951.0,2,5902.0,vcB\n"
        + "2017-10-09 07:01:55,0,8,0,vcC\n",  # same time as the first: keeps file order
        bom=True,
    )
    trace = read_philly(path)
    assert trace.name == "philly"
    assert trace.start_time == datetime(2017, 10, 9, 6, 13, 3, tzinfo=UTC)
    assert trace.start_time is not None and trace.start_time.tzinfo is not None
    got = [(j.job_id, j.submit_s, j.duration_s, j.gpus, j.project) for j in trace.jobs]
    assert got == [
        (1, 0.0, 2951.0, 2, "vcB"),
        (2, 2932.0, 66.0, 1, "vcA"),
        (3, 2932.0, 0.0, 8, "vcC"),  # a zero duration is an instant job, allowed
    ]
    assert all(j.gpu_model is None for j in trace.jobs)
    assert trace.gpu_seconds == 2951.0 * 2 + 66.0
    assert_invariants(trace)


def test_philly_error_message_names_file_row_column_value_and_expectation(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        "philly.csv",
        PHILLY_HEADER + "2017-10-09 07:01:55,66.0,1,66.0,vcA\n2017-10-09 07:01:55,66.0,x,66,vcA\n",
    )
    with pytest.raises(TraceError) as info:
        read_philly(path)
    assert str(info.value) == (
        "philly.csv row 3, column 'num_gpus': expected a whole number of GPUs >= 1, got 'x'"
    )
    assert isinstance(info.value, ValueError)
    assert (info.value.file, info.value.row, info.value.column, info.value.value) == (
        "philly.csv",
        3,
        "num_gpus",
        "x",
    )


def test_philly_rows_count_like_a_spreadsheet_blank_lines_included(tmp_path: Path) -> None:
    path = write(tmp_path, "p.csv", PHILLY_HEADER + "\n\n2017-10-09 07:01:55,-1,1,0,vc\n")
    raises_at(path, 4, "duration", "a duration in seconds >= 0")


@pytest.mark.parametrize(
    ("row", "column", "expected"),
    [
        ("2017-10-09T07:01:55,1,1,1,vc", "timestamp", "a date-time YYYY-MM-DD HH:MM:SS"),
        ("2017-13-09 07:01:55,1,1,1,vc", "timestamp", "a date-time YYYY-MM-DD HH:MM:SS"),
        ("2017-10-09 07:01:55,abc,1,1,vc", "duration", "a duration in seconds >= 0"),
        ("2017-10-09 07:01:55,-5,1,1,vc", "duration", "a duration in seconds >= 0"),
        ("2017-10-09 07:01:55,nan,1,1,vc", "duration", "a duration in seconds >= 0"),
        ("2017-10-09 07:01:55,1,0,1,vc", "num_gpus", "a whole number of GPUs >= 1"),
        ("2017-10-09 07:01:55,1,1.5,1,vc", "num_gpus", "a whole number of GPUs >= 1"),
        ("2017-10-09 07:01:55,1,,1,vc", "num_gpus", "a whole number of GPUs >= 1"),
        ("2017-10-09 07:01:55,1,1,1,", "cluster", "a virtual-cluster id (not empty)"),
        ("2017-10-09 07:01:55,1,1", "cluster", "a virtual-cluster id (not empty)"),  # short
    ],
)
def test_philly_bad_values(tmp_path: Path, row: str, column: str, expected: str) -> None:
    path = write(tmp_path, "philly.csv", PHILLY_HEADER + row + "\n")
    raises_at(path, 2, column, expected)


def test_philly_whole_float_gpu_count_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "philly.csv", PHILLY_HEADER + "2017-10-09 07:01:55,10,4.0,40,vc\n")
    assert read_philly(path).jobs[0].gpus == 4


def test_philly_missing_column_lists_the_header(tmp_path: Path) -> None:
    path = write(tmp_path, "philly.csv", "timestamp,duration,gpus,cluster\n")
    with pytest.raises(TraceError) as info:
        read_philly(path)
    message = str(info.value)
    assert "philly.csv row 1: no column 'num_gpus' in the header" in message
    assert "'timestamp', 'duration', 'gpus', 'cluster'" in message


def test_philly_duplicate_column(tmp_path: Path) -> None:
    path = write(tmp_path, "philly.csv", "timestamp,duration,num_gpus,num_gpus,cluster\n")
    with pytest.raises(TraceError, match=r"row 1: column 'num_gpus' appears 2 times"):
        read_philly(path)


@pytest.mark.parametrize("text", ["", PHILLY_HEADER, PHILLY_HEADER + "\n ,,,,\n"])
def test_philly_no_jobs(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "philly.csv", text)
    with pytest.raises(TraceError, match=r"^philly\.csv: no jobs"):
        read_philly(path)


def test_not_utf8_is_a_trace_error(tmp_path: Path) -> None:
    path = tmp_path / "philly.csv"
    path.write_bytes(PHILLY_HEADER.encode() + b"2017-10-09 07:01:55,1,1,1,\xff\xfe\n")
    with pytest.raises(TraceError, match="not UTF-8"):
        read_philly(path)


def test_broken_csv_is_a_trace_error(tmp_path: Path) -> None:
    huge = "x" * (csv.field_size_limit() + 10)
    path = write(tmp_path, "philly.csv", PHILLY_HEADER + f'2017-10-09 07:01:55,1,1,1,"{huge}"\n')
    with pytest.raises(TraceError, match=r"philly\.csv row 2: not valid CSV"):
        read_philly(path)


# -- Alibaba ----------------------------------------------------------------------------------


def test_alibaba_reads_gpu_pods_and_skips_cpu_only(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pods.csv",
        ALIBABA_HEADER
        + "p0,8000,1024,0,0,,LS,Running,5,100,5\n"  # CPU-only: skipped (earliest, not origin)
        + "p1,12000,16384,1,460,,LS,Running,10,200,50\n"  # fractional GPU -> 1 whole
        + "p2,6000,12288,8,1000,V100M16|V100M32,BE,Succeeded,20,300,30\n"
        + "p3,6000,12288,2,1000, P100 ,Burstable,Pending,15,40,\n"  # never scheduled
        + "p4,6000,12288,1,1000,,,Failed,12,112,xyz\n",  # invalid scheduled_time, no qos
        bom=True,
    )
    trace, skipped = read_alibaba_with_skipped(path)
    assert skipped == 1
    assert trace.name == "pods"
    assert trace.start_time is None
    got = [(j.job_id, j.submit_s, j.duration_s, j.gpus, j.project, j.gpu_model) for j in trace.jobs]
    assert got == [
        (1, 0.0, 150.0, 1, "LS", None),
        (2, 2.0, 100.0, 1, "default", None),
        (3, 5.0, 25.0, 2, "Burstable", "P100"),
        (4, 10.0, 270.0, 8, "BE", "V100M16"),
    ]
    assert read_alibaba(path).jobs == trace.jobs
    assert_invariants(trace)


def test_alibaba_scheduled_before_creation_falls_back_to_creation(tmp_path: Path) -> None:
    path = write(tmp_path, "pods.csv", ALIBABA_HEADER + "p,1,1,1,1000,,LS,Running,10,40,3\n")
    assert read_alibaba(path).jobs[0].duration_s == 30.0


@pytest.mark.parametrize(
    ("row", "column", "expected"),
    [
        ("p,1,1,a,1000,,LS,Running,0,10,0", "num_gpu", "a whole number of GPUs >= 0"),
        ("p,1,1,-1,1000,,LS,Running,0,10,0", "num_gpu", "a whole number of GPUs >= 0"),
        ("p,1,1,1,1000,,LS,Running,,10,0", "creation_time", "a creation time in seconds"),
        ("p,1,1,1,1000,,LS,Running,0,soon,0", "deletion_time", "a deletion time in seconds"),
        ("p,1,1,1,1000,,LS,Running,0,10,20", "deletion_time", "a time at or after scheduled_time"),
        ("p,1,1,1,1000,,LS,Pending,30,10,", "deletion_time", "a time at or after creation_time"),
    ],
)
def test_alibaba_bad_values(tmp_path: Path, row: str, column: str, expected: str) -> None:
    path = write(tmp_path, "pods.csv", ALIBABA_HEADER + "ok,1,1,1,1000,,LS,Running,0,1,0\n" + row)
    raises_at(path, 3, column, expected, read_alibaba)


def test_alibaba_only_cpu_pods_is_no_jobs(tmp_path: Path) -> None:
    path = write(tmp_path, "pods.csv", ALIBABA_HEADER + "p,1,1,0,0,,LS,Running,0,10,0\n")
    with pytest.raises(TraceError, match=r"no jobs.*1 CPU-only pods skipped"):
        read_alibaba(path)


def test_alibaba_missing_column(tmp_path: Path) -> None:
    path = write(tmp_path, "pods.csv", "name,num_gpu,qos,creation_time,deletion_time\n")
    with pytest.raises(
        TraceError, match=r"pods\.csv row 1: no column 'gpu_spec'.*'name', 'num_gpu'"
    ):
        read_alibaba(path)


# -- parse_columns ----------------------------------------------------------------------------


def test_parse_columns_splits_on_commas_then_the_first_equals() -> None:
    spec = " submit = Submit Time ,duration=run secs,gpus=a=b, project=Team Name"
    assert parse_columns(spec) == {
        "submit": "Submit Time",
        "duration": "run secs",
        "gpus": "a=b",
        "project": "Team Name",
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "--columns is empty"),
        ("submit=a,gpus", "part 'gpus': expected ROLE=COLUMN"),
        ("submit=a,=b", "part '=b': expected ROLE=COLUMN"),
        ("submit=a,gpus=", "part 'gpus=': expected ROLE=COLUMN"),
        ("submit=a,gpus=b,", "part '': expected ROLE=COLUMN"),
        ("submit=a,size=b", "unknown role 'size'; roles are submit, duration, end, gpus"),
        ("submit=a,submit=b", "role 'submit' is given more than once"),
    ],
)
def test_parse_columns_errors(spec: str, message: str) -> None:
    with pytest.raises(TraceError) as info:
        parse_columns(spec)
    assert message in str(info.value)


# -- generic ----------------------------------------------------------------------------------

GENERIC = "job,start,secs,n,team,gpu\nj1,100,10,2,a,H100\nj2,40.5,0,1,,\nj3,100,5,1,b,\n"


def test_generic_seconds_with_duration(tmp_path: Path) -> None:
    path = write(tmp_path, "mine.csv", GENERIC, bom=True)
    cols = {"submit": "start", "duration": "secs", "gpus": "n", "project": "team", "model": "gpu"}
    trace = read_generic(path, cols, "seconds")
    assert trace.name == "mine"
    assert trace.start_time is None
    got = [(j.job_id, j.submit_s, j.duration_s, j.gpus, j.project, j.gpu_model) for j in trace.jobs]
    assert got == [
        (1, 0.0, 0.0, 1, "default", None),
        (2, 59.5, 10.0, 2, "a", "H100"),
        (3, 59.5, 5.0, 1, "b", None),
    ]


def test_generic_without_project_uses_default(tmp_path: Path) -> None:
    path = write(tmp_path, "mine.csv", GENERIC)
    trace = read_generic(path, {"submit": "start", "duration": "secs", "gpus": "n"}, "seconds")
    assert {j.project for j in trace.jobs} == {"default"}


def test_generic_seconds_with_end(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "Submit Time,End Time,GPUs\n1000,1600,4\n900,900,1\n")
    cols = parse_columns("submit=Submit Time,end=End Time,gpus=GPUs")
    trace = read_generic(path, cols, "seconds")
    assert [(j.submit_s, j.duration_s, j.gpus) for j in trace.jobs] == [
        (0.0, 0.0, 1),
        (100.0, 600.0, 4),
    ]


def test_generic_iso_datetimes_naive_is_utc_aware_kept(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.csv",
        "sub,end,g\n"
        "2024-03-01T10:00:00,2024-03-01T11:00:00,1\n"
        "2024-03-01T10:30:00+01:00,2024-03-01T10:00:00Z,2\n",  # 09:30 UTC, ends 10:00 UTC
    )
    trace = read_generic(path, {"submit": "sub", "end": "end", "gpus": "g"}, "datetime")
    plus_one = timezone(timedelta(hours=1))
    assert trace.start_time == datetime(2024, 3, 1, 10, 30, tzinfo=plus_one)
    assert [(j.submit_s, j.duration_s, j.gpus) for j in trace.jobs] == [
        (0.0, 1800.0, 2),
        (1800.0, 3600.0, 1),
    ]


def test_generic_strptime_format(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "when,dur,g\n01/03/2024 10:00,60,1\n01/03/2024 09:00,60,1\n")
    cols = {"submit": "when", "duration": "dur", "gpus": "g"}
    trace = read_generic(path, cols, "datetime", "%d/%m/%Y %H:%M")
    assert trace.start_time == datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
    assert [j.submit_s for j in trace.jobs] == [0.0, 3600.0]


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"submit": "a", "duration": "b", "gpus": "c", "size": "d"}, "unknown role 'size'"),
        ({"duration": "b", "gpus": "c"}, "the 'submit' role is required"),
        ({"submit": "a", "duration": "b"}, "the 'gpus' role is required"),
        ({"submit": "a", "duration": "b", "end": "e", "gpus": "c"}, "exactly one of 'duration'"),
        ({"submit": "a", "gpus": "c"}, "exactly one of 'duration'"),
        ({"submit": "a", "duration": " ", "gpus": "c"}, "role 'duration' is mapped to an empty"),
    ],
)
def test_generic_bad_mapping(tmp_path: Path, columns: Mapping[str, str], message: str) -> None:
    path = write(tmp_path, "t.csv", "a,b,c\n1,1,1\n")
    with pytest.raises(TraceError) as info:
        read_generic(path, columns, "seconds")
    assert message in str(info.value)


def test_generic_bad_time_format_options(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "a,b,c\n1,1,1\n")
    cols = {"submit": "a", "duration": "b", "gpus": "c"}
    with pytest.raises(TraceError, match="expected 'seconds' or 'datetime'"):
        read_generic(path, cols, "epoch")  # type: ignore[arg-type]
    with pytest.raises(TraceError, match="only applies when the time format is 'datetime'"):
        read_generic(path, cols, "seconds", "%Y")


def test_generic_mapped_column_not_in_header(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "a,b,c\n1,1,1\n")
    with pytest.raises(TraceError) as info:
        read_generic(path, {"submit": "a", "duration": "secs", "gpus": "c"}, "seconds")
    assert str(info.value) == (
        "t.csv row 1: no column 'secs' in the header; the header's columns are: 'a', 'b', 'c'"
    )


SECONDS_END = {"submit": "s", "end": "e", "gpus": "g"}
SECONDS_DUR = {"submit": "s", "duration": "e", "gpus": "g"}


@pytest.mark.parametrize(
    ("columns", "time_format", "fmt", "row", "column", "expected"),
    [
        (SECONDS_DUR, "seconds", None, "x,1,1", "s", "a number of seconds"),
        (SECONDS_DUR, "seconds", None, "inf,1,1", "s", "a number of seconds"),
        (SECONDS_DUR, "seconds", None, "1,ten,1", "e", "a duration in seconds >= 0"),
        (SECONDS_DUR, "seconds", None, "1,-1,1", "e", "a duration in seconds >= 0"),
        (SECONDS_END, "seconds", None, "1,oops,1", "e", "a number of seconds"),
        (SECONDS_END, "seconds", None, "10,5,1", "e", "a time at or after the submit time"),
        (SECONDS_DUR, "seconds", None, "1,1,0", "g", "a whole number of GPUs >= 1"),
        (SECONDS_DUR, "seconds", None, "1,1,2.5", "g", "a whole number of GPUs >= 1"),
        (SECONDS_DUR, "seconds", None, "1,1,many", "g", "a whole number of GPUs >= 1"),
        (SECONDS_DUR, "datetime", None, "yesterday,1,1", "s", "an ISO 8601 date-time"),
        (SECONDS_END, "datetime", None, "2024-01-02,2024-01-01,1", "e", "a time at or after"),
        (SECONDS_END, "datetime", "%Y", "2024,24,1", "e", "a date-time in the format '%Y'"),
    ],
)
def test_generic_bad_values(
    tmp_path: Path,
    columns: Mapping[str, str],
    time_format: str,
    fmt: str | None,
    row: str,
    column: str,
    expected: str,
) -> None:
    ends = "end" in columns
    if time_format == "seconds":
        good = "0,5,1"
    elif fmt is not None:
        good = "2024,2025,1" if ends else "2024,5,1"
    else:
        good = "2024-01-01,2024-01-02,1" if ends else "2024-01-01,5,1"
    path = write(tmp_path, "t.csv", f"s,e,g\n{good}\n{row}\n")

    def read(p: Path) -> Trace:
        return read_generic(p, columns, time_format, fmt)  # type: ignore[arg-type]

    error = raises_at(path, 3, column, expected, read)
    assert repr(row.split(",")[["s", "e", "g"].index(column)]) in str(error)


def test_generic_end_before_submit_message_shows_the_submit(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "s,e,g\n10,5,1\n")
    with pytest.raises(TraceError) as info:
        read_generic(path, SECONDS_END, "seconds")
    assert str(info.value) == (
        "t.csv row 2, column 'e': expected a time at or after the submit time ('s': '10'), got '5'"
    )


def test_generic_submit_times_too_far_apart(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "s,e,g\n-1e308,1,1\n1e308,1,1\n")
    with pytest.raises(TraceError, match=r"t\.csv row 3, column 's': expected a submit time"):
        read_generic(path, SECONDS_DUR, "seconds")


@pytest.mark.parametrize("text", ["", "s,e,g\n", "s,e,g\n\n\n"])
def test_generic_no_jobs(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "t.csv", text)
    with pytest.raises(TraceError, match=r"^t\.csv: no jobs"):
        read_generic(path, SECONDS_DUR, "seconds")


# -- detection and dispatch -------------------------------------------------------------------


def test_detect_format(tmp_path: Path) -> None:
    philly = write(tmp_path, "a.csv", PHILLY_HEADER, bom=True)
    alibaba = write(tmp_path, "b.csv", ALIBABA_HEADER)
    other = write(tmp_path, "c.csv", "sn,cpu_milli,memory_mib,gpu,model\n")
    assert detect_format(philly) == "philly"
    assert detect_format(alibaba) == "alibaba"
    assert detect_format(other) == "generic"
    with pytest.raises(TraceError, match="no jobs"):
        detect_format(write(tmp_path, "d.csv", ""))


def test_load_trace_dispatches(tmp_path: Path) -> None:
    philly = write(tmp_path, "philly.csv", PHILLY_HEADER + "2017-10-09 07:01:55,66.0,1,66.0,vc\n")
    pods = write(tmp_path, "pods.csv", ALIBABA_HEADER + "p,1,1,1,1000,,LS,Running,0,10,0\n")
    mine = write(tmp_path, "mine.csv", GENERIC)
    assert load_trace(philly).jobs == read_philly(philly).jobs
    assert load_trace(pods, "alibaba").jobs == read_alibaba(pods).jobs
    cols = {"submit": "start", "duration": "secs", "gpus": "n"}
    assert load_trace(mine, "generic", cols).jobs == read_generic(mine, cols, "seconds").jobs
    assert load_trace(mine, columns=cols).jobs == read_generic(mine, cols, "seconds").jobs
    # columns given with auto: read as generic even when the header looks like Philly.
    pcols = {"submit": "timestamp", "duration": "duration", "gpus": "num_gpus"}
    generic = load_trace(philly, columns=pcols, time_format="datetime")
    assert generic.jobs[0].project == "default"


def test_load_trace_errors(tmp_path: Path) -> None:
    mine = write(tmp_path, "mine.csv", GENERIC)
    philly = write(tmp_path, "philly.csv", PHILLY_HEADER + "2017-10-09 07:01:55,66.0,1,66.0,vc\n")
    with pytest.raises(TraceError, match=r"mine\.csv: not a known trace format.*pass --columns"):
        load_trace(mine)
    with pytest.raises(TraceError, match="the generic format needs --columns"):
        load_trace(mine, "generic")
    with pytest.raises(TraceError, match="--columns is only for the generic format, not philly"):
        load_trace(philly, "philly", {"submit": "timestamp"})
    with pytest.raises(TraceError, match="expected auto, philly, alibaba or generic"):
        load_trace(philly, "sia")  # type: ignore[arg-type]


# -- fuzz: read_generic returns a sound trace or raises TraceError, nothing else --------------

_junk = st.one_of(
    st.floats().map(repr),
    st.sampled_from(
        [
            "",
            " ",
            "0",
            "-1",
            "2.0",
            "1.5",
            "-0",
            "nan",
            "inf",
            "1e308",
            "-1e308",
            "1_000",
            "2024-01-01T00:00:00",
            "2024-01-01 00:00:00+05:00",
            "2024-02-30",
            "a,b",
            '"',
            "\n",
        ]
    ),
    st.text(max_size=6),
)
_offsets: st.SearchStrategy[tzinfo | None] = st.sampled_from(
    [None, UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
)


def _stamp(moment: datetime, offset: tzinfo | None) -> str:
    return moment.replace(tzinfo=offset).isoformat()


_plausible: dict[str, dict[str, st.SearchStrategy[str]]] = {
    "seconds": {
        "s": st.one_of(st.integers(-(10**6), 10**9).map(str), st.floats(-1e9, 1e9).map(repr)),
    },
    "datetime": {
        "s": st.builds(_stamp, st.datetimes(max_value=datetime(4999, 1, 1)), _offsets),
        "e": st.builds(_stamp, st.datetimes(min_value=datetime(5000, 1, 1)), _offsets),
    },
}
# Ends are mostly after submits; junk cells (below) supply the ones before.
_plausible["seconds"]["e"] = st.integers(10**9, 2 * 10**9).map(str)
for _plain in _plausible.values():
    _plain["d"] = st.one_of(st.integers(0, 10**6).map(str), st.floats(0, 1e6).map(repr))
    _plain["g"] = st.integers(1, 64).map(str)
    _plain["p"] = _plain["m"] = _plain["x"] = st.text(max_size=4)
_names = ["s", "d", "e", "g", "p", "m", "x"]


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "fuzz.csv"


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    time_format=st.sampled_from(["seconds", "datetime"]),
    use_end=st.booleans(),
    with_project=st.booleans(),
)
def test_fuzz_read_generic_returns_sound_trace_or_trace_error(
    fuzz_file: Path, data: st.DataObject, time_format: str, use_end: bool, with_project: bool
) -> None:
    """Mostly plausible cells with some junk, so that both outcomes are common."""
    header = data.draw(
        st.one_of(
            st.permutations(_names),
            st.permutations(_names),
            st.lists(st.sampled_from(_names), min_size=1, max_size=8),
        )
    )
    plausible = _plausible[time_format]
    rows: list[list[str]] = []
    for _ in range(data.draw(st.integers(0, 6))):
        width = data.draw(st.sampled_from([len(header)] * 8 + [0, 2, len(header) + 1]))
        rows.append(
            [
                data.draw(_junk if data.draw(st.integers(0, 24)) == 0 else plausible[name])
                for name in [*header, "x"][:width]
            ]
        )
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    text = buffer.getvalue()
    if data.draw(st.integers(0, 4)) == 0:  # sometimes raw text: broken quoting, odd lines
        text += data.draw(st.text(max_size=40))
    fuzz_file.write_text(text, encoding="utf-8", newline="")
    columns = {"submit": "s", "gpus": "g", "model": "m"}
    columns["end" if use_end else "duration"] = "e" if use_end else "d"
    if with_project:
        columns["project"] = "p"
    try:
        trace = read_generic(fuzz_file, columns, time_format)  # type: ignore[arg-type]
    except TraceError:
        return
    assert_invariants(trace)


# -- the real traces, when checked out beside the repository ----------------------------------


def real(name: str) -> Path:
    path = TRACES / name
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    return path


def test_real_philly() -> None:
    path = real("philly.csv")
    with path.open(newline="", encoding="utf-8-sig") as f:
        gpu_time = sum(float(r["gpu_time"]) for r in csv.DictReader(f))
    assert detect_format(path) == "philly"
    trace = read_philly(path)
    assert len(trace.jobs) == 82_247
    assert len({j.project for j in trace.jobs}) == 15
    assert math.isclose(trace.gpu_seconds, gpu_time, rel_tol=1e-9)
    assert trace.start_time == datetime(2017, 9, 4, 10, 30, 41, tzinfo=UTC)
    assert_invariants(trace)


def test_real_alibaba() -> None:
    path = real("alibaba-openb-pods.csv")
    assert detect_format(path) == "alibaba"
    trace, skipped = read_alibaba_with_skipped(path)
    assert len(trace.jobs) + skipped == 8_152
    assert skipped == 1_088  # the pods with num_gpu == 0
    assert {j.project for j in trace.jobs} <= {"LS", "BE", "Burstable", "Guaranteed"}
    assert_invariants(trace)
