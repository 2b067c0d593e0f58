"""Fuzzing the trace importer (aisc.sim.traces) with hypothesis.

Whatever the file holds (random bytes, other encodings, BOMs, NULs, odd delimiters and quotes,
huge, negative, NaN or infinite numbers, dates in odd formats) and however its columns are
described, the importer either returns a trace that keeps the module's promises or raises its
own TraceError, whose one-line message names the file, row and column it found at fault. And
jobs written out as CSV, in any column order and under any names, in seconds or date-times,
come back exactly as they went in.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aisc.sim.records import Trace, TraceJob
from aisc.sim.traces import (
    ALIBABA_COLUMNS,
    DEFAULT_PROJECT,
    GENERIC_ROLES,
    MAX_JOB_GPUS,
    PHILLY_COLUMNS,
    TraceError,
    detect_format,
    load_trace,
    parse_columns,
    read_alibaba_with_skipped,
)
from tests.fuzz.budget import fuzz_settings

NAMES = [
    *PHILLY_COLUMNS,
    *ALIBABA_COLUMNS,
    "gpu_time",
    "name",
    "pod_phase",
    "start",
    "end",
    "secs",
    "n",
    "team",
    "model",
    " timestamp ",
    "Timestamp",
    "a,b",
    'say "hi"',
    "",
    "\x00",
    "\ufeffnum_gpu",
]

NASTY_CELLS = [
    "",
    " ",
    "0",
    "1",
    "-1",
    "2",
    "8",
    "1.5",
    "-0",
    "+3",
    " 7 ",
    "1e308",
    "-1e308",
    "1.7976931348623157e308",
    "1e309",
    "-1e309",
    "nan",
    "NaN",
    "inf",
    "-Infinity",
    "0x10",
    "1_000",
    "١٢",  # Arabic-Indic digits: int() reads them
    "²",
    "9" * 400,
    "9" * 5000,  # past Python's int() digit limit
    "2017-10-09 07:01:55",
    "2017-10-09T07:01:55+08:00",
    "2017-10-09 07:01:55Z",
    "2024-02-30 00:00:00",
    "2024-13-01T00:00:00",
    "0001-01-01 00:00:00",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31 23:59:59",
    "9999-12-31T23:59:59-14:00",
    "2024-01-01",
    "20240101T000000",
    "2024 366",
    "9999 53 7",
    "LS",
    "BE",
    "V100M16|V100M32",
    "|",
    "\x00",
    "a\x00b",
    "é",
    "\ufeff",
    '"',
    "\n",
    "\r",
]

DATETIME_FORMATS = [
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y %j",
    "%G %V %u",
    "%Y %U %w",
    "%d/%m/%Y",
    "%s",
    "%",
    "%Q",
    "%z",
    "",
]

nasty = st.one_of(st.sampled_from(NASTY_CELLS), st.text(max_size=12))
EXTREMES = [1e308, -1e308, 1.7976931348623157e308, -1.7976931348623157e308]
seconds = st.one_of(
    st.integers(min_value=-(10**7), max_value=10**8).map(float),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(EXTREMES),
)
lengths = st.one_of(st.integers(0, 10**6).map(float), st.floats(0, 1e6), st.sampled_from(EXTREMES))
gpu_counts = st.one_of(
    st.integers(min_value=-1, max_value=16).map(str),
    st.integers(min_value=1, max_value=16).map(str),
    st.sampled_from(["2.0", "1e3", "1e30", "9" * 30, "9" * 400, "1" + "0" * 309, "1.5", "0"]),
)
labels = st.one_of(st.sampled_from(["vc1", "LS", "BE", "V100M16|V100M32", "", "|"]), st.text())
date_times = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
zones = st.one_of(
    st.none(), st.integers(-(14 * 60), 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
)


def text_of(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)


@st.composite
def philly_row(draw: st.DrawFn) -> dict[str, str]:
    return {
        "timestamp": draw(date_times).isoformat(sep=" ", timespec="seconds"),
        "duration": text_of(draw(lengths)),
        "num_gpus": draw(gpu_counts),
        "gpu_time": text_of(draw(seconds)),
        "cluster": draw(labels),
    }


@st.composite
def alibaba_row(draw: st.DrawFn) -> dict[str, str]:
    created = draw(seconds)
    scheduled = draw(st.sampled_from(["", "after", "before", "any"]))
    began = created
    if scheduled == "after":
        began = created + draw(lengths)
        scheduled = text_of(began)
    elif scheduled in ("before", "any"):
        scheduled = text_of(created - draw(lengths) if scheduled == "before" else draw(seconds))
    deleted = text_of(began + draw(lengths)) if not rarely(draw, 4) else text_of(draw(seconds))
    if rarely(draw, 8):  # as far apart as floats go: the difference is no longer a number
        created, scheduled, deleted = -1.7976931348623157e308, "", "1.7976931348623157e308"
    return {
        "num_gpu": draw(gpu_counts),
        "gpu_spec": draw(labels),
        "qos": draw(labels),
        "creation_time": text_of(created),
        "deletion_time": deleted,
        "scheduled_time": scheduled,
    }


@st.composite
def generic_row(draw: st.DrawFn) -> dict[str, str]:
    length = draw(lengths)
    if draw(st.booleans()):
        start: Any = draw(seconds)
        end = text_of(start + length)
        start = text_of(start)
    else:
        at = draw(date_times).replace(tzinfo=draw(zones))
        sep = draw(st.sampled_from(["T", " "]))
        start = at.isoformat(sep=sep)
        try:
            end = (at + timedelta(seconds=min(length, 10**10))).isoformat(sep=sep)
        except OverflowError:
            end = "9999-12-31T23:59:59"
    return {"start": start, "end": end, "secs": text_of(length), "n": draw(gpu_counts)}


ROWS = {
    PHILLY_COLUMNS: philly_row(),
    ALIBABA_COLUMNS: alibaba_row(),
    ("start", "secs", "n"): generic_row(),
    ("start", "end", "n", "team"): generic_row(),
}
GENERIC_HEADERS = [("start", "secs", "n"), ("start", "end", "n", "team")]


def rarely(draw: Callable[[st.SearchStrategy[int]], int], one_in: int) -> bool:
    # A middle value: hypothesis draws the ends of a range far more often than the rest.
    return draw(st.integers(0, one_in - 1)) == one_in // 2


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@st.composite
def tables(draw: st.DrawFn, wanted: tuple[str, ...]) -> Table:
    """The columns a reader needs, in any order, with strays; rows of plausible values (extreme
    ones included), in half the tables with nasty cells among them."""
    header = list(draw(st.permutations(wanted)))
    header += draw(st.lists(st.one_of(st.sampled_from(NAMES), st.text(max_size=8)), max_size=2))
    if draw(st.booleans()):
        header = draw(st.permutations(header))
    clean = draw(st.booleans())
    rows: list[list[str]] = []
    for _ in range(0 if rarely(draw, 10) else draw(st.integers(1, 6))):
        values = draw(ROWS[wanted])
        row: list[str] = []
        for name in header:
            value = values.get(name)
            if value is None or (not clean and rarely(draw, 5)):
                value = draw(nasty) if value is None or draw(st.booleans()) else value
            row.append(value)
        if not clean and rarely(draw, 10):  # ragged: a cell missing or one extra
            shorter = draw(st.booleans())
            row = row[:-1] if row and shorter else [*row, draw(nasty)]
        rows.append(row)
    return Table(header, rows)


@dataclass(frozen=True)
class File:
    data: bytes
    header: list[str]  # the header it was written with, if any


@st.composite
def files(draw: st.DrawFn, wanted: tuple[str, ...]) -> File:
    """The bytes of a CSV-ish file: a table in some dialect and encoding, or noise."""
    if rarely(draw, 20):
        return File(draw(st.binary(max_size=200)), [])
    table = draw(tables(wanted))
    out = io.StringIO()
    style = "csv" if not rarely(draw, 3) else draw(st.sampled_from(["naive", "semicolon", "tab"]))
    terminator = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    if style == "naive":  # what a careless script writes: no quoting at all
        for record in [table.header, *table.rows]:
            out.write(",".join(record) + terminator)
    else:
        delimiter = {"csv": ",", "semicolon": ";", "tab": "\t"}[style]
        writer = csv.writer(out, delimiter=delimiter, lineterminator=terminator)
        writer.writerows([table.header, *table.rows])
    text = out.getvalue()
    if rarely(draw, 3):
        text += draw(st.sampled_from(["", "\n", "\n\n", " , ,\n", '"unclosed', "\x00"]))
    encoding = "utf-8"
    if rarely(draw, 5):
        encoding = draw(st.sampled_from(["utf-8-sig", "latin-1", "utf-16"]))
    data = text.encode(encoding, errors="replace")
    if rarely(draw, 10):  # a stray byte or two: a damaged or mis-saved file
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=3)) + data[at:]
    return File(data, table.header)


@st.composite
def column_maps(draw: st.DrawFn, header: list[str]) -> dict[str, str]:
    """Roles mapped to columns: mostly each to its own column of the header, sometimes not."""
    roles = ["submit", draw(st.sampled_from(["duration", "end"])), "gpus"]
    roles += draw(st.lists(st.sampled_from(["project", "model"]), unique=True, max_size=2))
    if rarely(draw, 5):
        roles = draw(st.lists(st.sampled_from([*GENERIC_ROLES, "bogus"]), max_size=4))
    names = list(draw(st.permutations(header))) if header else []
    mapping = {}
    for i, role in enumerate(roles):
        name = names[i] if i < len(names) else ""
        if not name or rarely(draw, 8):
            name = draw(st.one_of(st.sampled_from(NAMES), st.text(max_size=6)))
        mapping[role] = name
    return mapping


def check_trace(trace: Trace) -> None:
    """What the module promises of every trace it returns."""
    jobs = trace.jobs
    assert jobs, "a trace with no jobs is an error, not a result"
    assert [j.job_id for j in jobs] == list(range(1, len(jobs) + 1))
    assert jobs[0].submit_s == 0
    assert all((a.submit_s, a.job_id) < (b.submit_s, b.job_id) for a, b in itertools.pairwise(jobs))
    for job in jobs:
        assert isinstance(job.gpus, int) and job.gpus >= 1
        assert job.gpus <= MAX_JOB_GPUS and math.isfinite(float(job.gpus)), job
        assert math.isfinite(job.submit_s) and job.submit_s >= 0, job
        assert math.isfinite(job.duration_s) and job.duration_s >= 0, job
        assert isinstance(job.project, str) and job.project, job
        assert job.project == job.project.strip(), job
        assert job.gpu_model is None or (job.gpu_model and job.gpu_model == job.gpu_model.strip())
    if trace.start_time is not None:
        assert trace.start_time.utcoffset() is not None, "start_time is timezone-aware"


def check_error(error: TraceError, file: str) -> None:
    """A TraceError's message is one line, and names what its attributes say is at fault."""
    message = str(error)
    assert message and "\n" not in message and "\r" not in message, message
    if error.file is not None:
        assert error.file == file and message.startswith(file), message
    if error.row is not None:
        assert error.row >= 1 and f"row {error.row}" in message, message
    if error.column is not None:
        assert repr(error.column) in message, message


def outcome(call: Callable[[], Trace | tuple[Trace, int]], file: str) -> Trace | None:
    """Run one reader: a valid trace, or its own error; anything else fails the test."""
    try:
        result = call()
    except TraceError as error:
        check_error(error, file)
        return None
    trace = result[0] if isinstance(result, tuple) else result
    if isinstance(result, tuple):
        assert isinstance(result[1], int) and result[1] >= 0  # CPU-only pods skipped
    check_trace(trace)
    return trace


@pytest.fixture
def trace_path(tmp_path: Path) -> Path:
    return tmp_path / "trace.csv"


@fuzz_settings(400)
@given(data=st.data(), kind=st.sampled_from(["philly", "alibaba"]))
def test_known_formats_read_anything(trace_path: Path, data: st.DataObject, kind: str) -> None:
    file = data.draw(files(PHILLY_COLUMNS if kind == "philly" else ALIBABA_COLUMNS), "file")
    fmt: Any = data.draw(st.sampled_from([kind, "auto"]), "format")
    if rarely(data.draw, 5):  # the other reader, or a generic header, read as this format
        file = data.draw(files(data.draw(st.sampled_from(list(ROWS)), "columns")), "file")
    trace_path.write_bytes(file.data)
    try:
        detected = detect_format(trace_path)
    except TraceError as error:
        check_error(error, trace_path.name)
    else:
        assert detected in ("philly", "alibaba", "generic")
    outcome(lambda: load_trace(trace_path, fmt), trace_path.name)
    if fmt == "alibaba":
        outcome(lambda: read_alibaba_with_skipped(trace_path), trace_path.name)


@fuzz_settings(400)
@given(
    data=st.data(),
    wanted=st.sampled_from([*GENERIC_HEADERS, PHILLY_COLUMNS]),
    time_format=st.sampled_from(["seconds", "datetime"]),
    fmt=st.sampled_from(["generic", "auto"]),
)
def test_generic_reads_anything(
    trace_path: Path,
    data: st.DataObject,
    wanted: tuple[str, ...],
    time_format: Any,
    fmt: Any,
) -> None:
    file = data.draw(files(wanted), "file")
    columns = data.draw(column_maps(file.header), "columns")
    if rarely(data.draw, 10):  # arguments no caller should pass, but one might
        time_format = data.draw(st.sampled_from(["minutes", ""]), "bad time format")
    if rarely(data.draw, 10):
        fmt = data.draw(st.sampled_from(["nonsense", "philly"]), "bad format")
    formats = st.one_of(st.sampled_from(DATETIME_FORMATS), st.text(max_size=6))
    if time_format == "datetime":  # mostly ISO 8601, sometimes a strptime format
        datetime_format = data.draw(st.one_of(st.none(), formats), "datetime format")
    else:  # mostly none, as it must be
        datetime_format = data.draw(st.one_of(st.none(), st.none(), formats), "datetime format")
    trace_path.write_bytes(file.data)
    outcome(
        lambda: load_trace(trace_path, fmt, columns, time_format, datetime_format),
        trace_path.name,
    )


@fuzz_settings(300)
@given(
    spec=st.one_of(
        st.text(max_size=40),
        st.lists(
            st.sampled_from(
                [*GENERIC_ROLES, "bogus", "=", ",", " ", "submit=", "=col", "gpus = n", "a=b=c"]
            )
        ).map("".join),
    )
)
def test_column_specs_parse_or_say_why(spec: str) -> None:
    try:
        columns = parse_columns(spec)
    except TraceError as error:
        assert str(error) and "\n" not in str(error)
        return
    assert columns
    for role, column in columns.items():
        assert role in GENERIC_ROLES
        assert column and column == column.strip() and "," not in column


# -- round trip -------------------------------------------------------------------------------

column_names = st.text(
    st.characters(codec="utf-8", exclude_characters=",\x00"), min_size=1, max_size=10
).filter(lambda name: name == name.strip() and "=" not in name)
stripped_text = st.text(st.characters(codec="utf-8"), max_size=10).map(str.strip)


@dataclass(frozen=True)
class Written:
    submit: int  # seconds after the trace's first submission
    duration: int | float
    gpus: int
    project: str
    model: str


@st.composite
def written_jobs(draw: st.DrawFn, whole_seconds: bool) -> list[Written]:
    duration = (
        st.integers(0, 10**7)
        if whole_seconds
        else st.one_of(st.integers(0, 10**7), st.floats(0, 1e7, allow_subnormal=False))
    )
    job = st.builds(
        Written,
        submit=st.integers(0, 10**8),
        duration=duration,
        gpus=st.integers(1, 4096),
        project=stripped_text,
        model=stripped_text,
    )
    return draw(st.lists(job, min_size=1, max_size=12))


@fuzz_settings(300)
@given(data=st.data())
def test_written_jobs_come_back(trace_path: Path, data: st.DataObject) -> None:
    time_format = data.draw(st.sampled_from(["seconds", "datetime"]), "time format")
    strptime = time_format == "datetime" and data.draw(st.booleans(), "strptime format")
    use_end = data.draw(st.booleans(), "end column")
    jobs = data.draw(written_jobs(whole_seconds=use_end or time_format == "datetime"), "jobs")
    roles = ["submit", "end" if use_end else "duration", "gpus"]
    roles += [r for r in ("project", "model") if data.draw(st.booleans(), f"map {r}")]
    names = data.draw(
        st.lists(column_names, min_size=len(roles) + 1, max_size=len(roles) + 3, unique=True),
        "column names",
    )
    mapping = dict(zip(roles, names, strict=False))
    header = data.draw(st.permutations(names), "column order")

    # Seconds in any base (an epoch, or negative); date-times naive (UTC) or with an offset.
    base_s = data.draw(st.integers(-(10**9), 10**9), "base")
    offset = data.draw(st.sampled_from([None, 0, 8 * 60, -(5 * 60 + 30)]), "offset")
    zone = None if offset is None or strptime else timezone(timedelta(minutes=offset))
    base_at = datetime(2020, 1, 1, tzinfo=zone) + timedelta(
        seconds=data.draw(st.integers(0, 10**8), "base time")
    )

    sep = data.draw(st.sampled_from(["T", " "]), "separator")

    def when(seconds: int) -> str:
        if time_format == "seconds":
            return str(base_s + seconds)
        at = base_at + timedelta(seconds=seconds)
        return at.strftime("%Y-%m-%d %H:%M:%S") if strptime else at.isoformat(sep=sep)

    out = io.StringIO()
    # QUOTE_MINIMAL quotes a "\r" only when it is in the line terminator
    eol = data.draw(st.sampled_from(["\r\n", "\n"]), "line terminator")
    writer = csv.writer(
        out,
        lineterminator=eol,
        quoting=csv.QUOTE_MINIMAL if eol == "\r\n" else csv.QUOTE_ALL,
    )
    writer.writerow(header)
    for job in jobs:
        values = {
            "submit": when(job.submit),
            "duration": repr(job.duration),
            "end": when(job.submit + int(job.duration)),
            "gpus": str(job.gpus),
            "project": job.project,
            "model": job.model,
        }
        by_name = {mapping[role]: values[role] for role in mapping}
        writer.writerow([by_name.get(name, "ignored") for name in header])
    bom = b"\xef\xbb\xbf" if data.draw(st.booleans(), "BOM") else b""
    trace_path.write_bytes(bom + out.getvalue().encode("utf-8"))

    spec = ",".join(f"{role}={name}" for role, name in mapping.items())
    trace = load_trace(
        trace_path,
        "generic",
        parse_columns(spec),
        time_format,  # type: ignore[arg-type]
        "%Y-%m-%d %H:%M:%S" if strptime else None,
    )

    first = min(job.submit for job in jobs)
    order = sorted(range(len(jobs)), key=lambda i: (jobs[i].submit, i))
    expected = [
        TraceJob(
            job_id=n,
            submit_s=float(jobs[i].submit - first),
            duration_s=float(int(jobs[i].duration) if use_end else jobs[i].duration),
            gpus=jobs[i].gpus,
            project=(jobs[i].project or DEFAULT_PROJECT) if "project" in mapping else "default",
            gpu_model=(jobs[i].model or None) if "model" in mapping else None,
        )
        for n, i in enumerate(order, start=1)
    ]
    assert trace.jobs == expected
    if time_format == "seconds":
        assert trace.start_time is None
    else:
        start = base_at + timedelta(seconds=first)
        assert trace.start_time == (start.replace(tzinfo=UTC) if start.tzinfo is None else start)
    check_trace(trace)
