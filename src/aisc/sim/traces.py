"""Read real GPU cluster job traces (CSV) into a :class:`~aisc.sim.records.Trace`.

Three formats:

- ``philly``: the Microsoft Philly trace as prepared for the Pollux and Sia simulators
  (``timestamp, duration, num_gpus, gpu_time, cluster``). See :func:`read_philly`.
- ``alibaba``: the Alibaba PAI 2023 "openb" pod list (``name, cpu_milli, memory_mib, num_gpu,
  gpu_milli, gpu_spec, qos, pod_phase, creation_time, deletion_time, scheduled_time``).
  See :func:`read_alibaba`.
- ``generic``: any CSV whose columns the user maps to roles. See :func:`read_generic`.

Common rules, whatever the format:

- Files are UTF-8, with or without a byte-order mark. They are read as a stream with the
  :mod:`csv` module. Surrounding whitespace is stripped from header names and from values.
  Blank lines are ignored. Columns the reader does not need are ignored.
- Row numbers in error messages count CSV records the way a spreadsheet shows them: the header
  is row 1 and the first job is row 2 (blank lines count as rows too). Without quoted fields
  that span lines, this is also the line number in a text editor.
- Every problem with the file's contents raises :class:`TraceError` (a :class:`ValueError`)
  whose message names the file, the row, the column, the bad value and what was expected.
  A file that cannot be opened raises the usual :class:`OSError`.
- ``submit_s`` is measured from the earliest submission in the file, so the first job submits
  at 0. Jobs are sorted by ``(submit_s, row in the file)`` and numbered ``job_id`` 1..n in that
  sorted order.
- A duration of 0 is allowed (an instant job); a negative one is an error. A job must ask for a
  whole number of GPUs >= 1 (the Alibaba reader skips CPU-only pods instead, see there).
- A file with a header and no jobs, or an empty file, is an error ("no jobs").
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal

from aisc.sim.records import Trace, TraceJob

__all__ = [
    "ALIBABA_COLUMNS",
    "DEFAULT_PROJECT",
    "GENERIC_ROLES",
    "MAX_JOB_GPUS",
    "PHILLY_COLUMNS",
    "TraceError",
    "detect_format",
    "load_trace",
    "parse_columns",
    "read_alibaba",
    "read_alibaba_with_skipped",
    "read_generic",
    "read_philly",
]

TraceFormat = Literal["philly", "alibaba", "generic"]
TimeFormat = Literal["seconds", "datetime"]

PHILLY_COLUMNS: tuple[str, ...] = ("timestamp", "duration", "num_gpus", "cluster")
"""The columns :func:`read_philly` needs (``gpu_time`` is redundant and not read)."""

ALIBABA_COLUMNS: tuple[str, ...] = (
    "num_gpu",
    "gpu_spec",
    "qos",
    "creation_time",
    "deletion_time",
    "scheduled_time",
)
"""The columns :func:`read_alibaba` needs (the others are not read)."""

GENERIC_ROLES: tuple[str, ...] = ("submit", "duration", "end", "gpus", "project", "model")
"""The roles a generic trace's columns can be mapped to."""

MAX_JOB_GPUS = 1_000_000
"""The most GPUs one job may ask for: far beyond any cluster, and small enough to compute with."""

DEFAULT_PROJECT = "default"
"""The project of a generic job when no ``project`` column is mapped, or its value is empty."""

_PHILLY_TIME_FORMAT = "YYYY-MM-DD HH:MM:SS"


class TraceError(ValueError):
    """A trace file (or the way it was described) cannot be read.

    The message says where and why, e.g. ``philly.csv row 17, column 'num_gpus': expected a
    whole number of GPUs >= 1, got 'x'``. Rows are numbered like a spreadsheet: the header is
    row 1, the first data row is row 2. The parts are also kept as attributes (``None`` where
    they do not apply) for callers that want them.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
        value: str | None = None,
        expected: str | None = None,
    ) -> None:
        super().__init__(message)
        self.file = file
        self.row = row
        self.column = column
        self.value = value
        self.expected = expected


def _bad(file: str, row: int, column: str, value: str, expected: str) -> TraceError:
    return TraceError(
        f"{file} row {row}, column {column!r}: expected {expected}, got {value!r}",
        file=file,
        row=row,
        column=column,
        value=value,
        expected=expected,
    )


def _no_jobs(file: str, detail: str = "") -> TraceError:
    suffix = f" ({detail})" if detail else ""
    return TraceError(f"{file}: no jobs in the file{suffix}", file=file)


# -- reading CSV records ----------------------------------------------------------------------


def _open(path: Path) -> IO[str]:
    # utf-8-sig strips a leading byte-order mark and reads plain UTF-8 unchanged.
    return path.open(newline="", encoding="utf-8-sig")


def _records(f: IO[str], file: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (row number, fields) for every non-blank record; the header is row 1."""
    reader = csv.reader(f)
    row = 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise TraceError(f"{file} row {row + 1}: not valid CSV: {exc}", file=file) from exc
        except UnicodeDecodeError as exc:
            # Text is decoded in blocks, so the bad byte is at this row or a later one.
            raise TraceError(
                f"{file}: not UTF-8 text ({exc.reason}, at row {row + 1} or later); "
                "save the file as UTF-8",
                file=file,
            ) from exc
        row += 1
        if record and (record[0].strip() or any(field.strip() for field in record)):
            yield row, record


def _header(records: Iterator[tuple[int, list[str]]], file: str) -> tuple[int, list[str]]:
    first = next(records, None)
    if first is None:
        raise _no_jobs(file, "the file is empty")
    row, fields = first
    return row, [name.strip() for name in fields]


def _locate(
    file: str, header_row: int, header: list[str], wanted: Mapping[str, str]
) -> dict[str, int]:
    """Map each key of ``wanted`` to the position of its column (``wanted[key]``) in the header."""
    found: dict[str, int] = {}
    for key, column in wanted.items():
        positions = [i for i, name in enumerate(header) if name == column]
        if not positions:
            listed = ", ".join(repr(name) for name in header)
            raise TraceError(
                f"{file} row {header_row}: no column {column!r} in the header; "
                f"the header's columns are: {listed}",
                file=file,
                row=header_row,
                column=column,
            )
        if len(positions) > 1:
            raise TraceError(
                f"{file} row {header_row}: column {column!r} appears {len(positions)} times "
                "in the header; it must appear once",
                file=file,
                row=header_row,
                column=column,
            )
        found[key] = positions[0]
    return found


def _get(record: list[str], index: int) -> str:
    return record[index].strip() if index < len(record) else ""


# -- parsing values ---------------------------------------------------------------------------


def _float_or_none(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _whole_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        pass
    value = _float_or_none(text)
    if value is None or not value.is_integer():
        return None
    return int(value)


def _seconds(file: str, row: int, column: str, text: str, expected: str) -> float:
    value = _float_or_none(text)
    if value is None:
        raise _bad(file, row, column, text, expected)
    return value


def _duration(file: str, row: int, column: str, text: str) -> float:
    expected = "a duration in seconds >= 0"
    value = _float_or_none(text)
    if value is None or value < 0:
        raise _bad(file, row, column, text, expected)
    return value


def _gpus(file: str, row: int, column: str, text: str, minimum: int = 1) -> int:
    value = _whole_or_none(text)
    if value is None or value < minimum:
        raise _bad(file, row, column, text, f"a whole number of GPUs >= {minimum}")
    if value > MAX_JOB_GPUS:  # e.g. "1e30": a number no cluster has, and too large to compute
        raise _bad(file, row, column, text, f"at most {MAX_JOB_GPUS:,} GPUs")
    return value


def _as_utc(value: datetime) -> datetime:
    """A naive date-time is taken to be UTC; an aware one is kept as it is."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _philly_time(file: str, row: int, column: str, text: str) -> datetime:
    # Checked by shape, then parsed by fromisoformat: several times faster than strptime.
    if len(text) == 19 and text[4] + text[7] + text[10] + text[13] + text[16] == "-- ::":
        try:
            return datetime.fromisoformat(text)  # naive; read_philly makes it UTC
        except ValueError:
            pass
    raise _bad(file, row, column, text, f"a date-time {_PHILLY_TIME_FORMAT}")


# -- building the trace -----------------------------------------------------------------------


@dataclass
class _Raw:
    row: int
    submit_s: float  # absolute, in the file's own time base
    duration_s: float
    gpus: int
    project: str
    gpu_model: str | None = None


def _build(
    name: str, file: str, submit_column: str, raws: list[_Raw], start_time: datetime | None
) -> Trace:
    if not raws:
        raise _no_jobs(file)
    origin = min(raw.submit_s for raw in raws)
    for raw in raws:
        raw.submit_s -= origin
        if not math.isfinite(raw.submit_s):
            raise TraceError(
                f"{file} row {raw.row}, column {submit_column!r}: expected a submit time "
                "a finite number of seconds after the earliest one",
                file=file,
                row=raw.row,
                column=submit_column,
            )
    raws.sort(key=lambda raw: (raw.submit_s, raw.row))
    jobs = [
        TraceJob(
            job_id=i,
            submit_s=raw.submit_s,
            duration_s=raw.duration_s,
            gpus=raw.gpus,
            project=raw.project,
            gpu_model=raw.gpu_model,
        )
        for i, raw in enumerate(raws, start=1)
    ]
    return Trace(name=name, jobs=jobs, start_time=start_time)


def _seconds_since(moment: datetime, origin: datetime) -> float:
    return (moment - origin).total_seconds()


# -- Philly -----------------------------------------------------------------------------------


def read_philly(path: str | Path) -> Trace:
    """Read the Philly trace (``timestamp, duration, num_gpus, gpu_time, cluster``).

    ``timestamp`` is the submission time, ``YYYY-MM-DD HH:MM:SS``, taken as UTC; the trace's
    ``start_time`` is the earliest one (timezone-aware, UTC). ``duration`` is seconds (a float,
    >= 0), ``num_gpus`` a whole number >= 1, and ``cluster`` (the virtual cluster, non-empty)
    becomes the job's project. ``gpu_time`` is not read: it is ``duration * num_gpus``.
    """
    p = Path(path)
    file = p.name
    stamps: list[datetime] = []
    raws: list[_Raw] = []
    with _open(p) as f:
        records = _records(f, file)
        header_row, header = _header(records, file)
        at = _locate(file, header_row, header, {c: c for c in PHILLY_COLUMNS})
        i_time, i_dur, i_gpus, i_cluster = (at[c] for c in PHILLY_COLUMNS)
        for row, record in records:
            stamp = _philly_time(file, row, "timestamp", _get(record, i_time))
            duration = _duration(file, row, "duration", _get(record, i_dur))
            gpus = _gpus(file, row, "num_gpus", _get(record, i_gpus))
            cluster = _get(record, i_cluster)
            if not cluster:
                raise _bad(file, row, "cluster", cluster, "a virtual-cluster id (not empty)")
            stamps.append(stamp)
            raws.append(_Raw(row, 0.0, duration, gpus, cluster))
    if not raws:
        raise _no_jobs(file)
    start = min(stamps)
    for raw, stamp in zip(raws, stamps, strict=True):
        raw.submit_s = _seconds_since(stamp, start)
    return _build(p.stem, file, "timestamp", raws, start.replace(tzinfo=UTC))


# -- Alibaba ----------------------------------------------------------------------------------


def read_alibaba_with_skipped(path: str | Path) -> tuple[Trace, int]:
    """Read an Alibaba openb pod list; return the trace and how many CPU-only pods were skipped.

    Per pod (times are seconds, any finite number):

    - ``num_gpu`` is a whole number >= 0. Pods with ``num_gpu == 0`` are CPU-only and are
      skipped (only counted); their other columns are not checked.
    - A fractional GPU (``gpu_milli < 1000`` with ``num_gpu == 1``, i.e. a share of one GPU)
      counts as one whole GPU: the simulator places whole GPUs. ``gpu_milli`` is not read.
    - submit = ``creation_time``. The job runs from ``scheduled_time`` to ``deletion_time``;
      when ``scheduled_time`` is empty, not a number, or before ``creation_time`` (pods that
      were never scheduled, e.g. ``Pending``), it runs from ``creation_time`` instead. A
      ``deletion_time`` before that start is an error.
    - project = ``qos`` (``LS``, ``BE``, ``Burstable``, ``Guaranteed``): the trace names no
      team, so the quality-of-service class is the closest grouping. Empty -> ``"default"``.
    - gpu_model = the first entry of ``gpu_spec`` (``"V100M16|V100M32"`` -> ``"V100M16"``),
      or ``None`` when it is empty (any model will do).
    - ``pod_phase`` is not read: every GPU pod becomes a job.

    The trace has no wall-clock time, so ``start_time`` is ``None``. A file with no GPU pods
    is an error ("no jobs").
    """
    p = Path(path)
    file = p.name
    raws: list[_Raw] = []
    skipped = 0
    with _open(p) as f:
        records = _records(f, file)
        header_row, header = _header(records, file)
        at = _locate(file, header_row, header, {c: c for c in ALIBABA_COLUMNS})
        for row, record in records:
            gpus = _gpus(file, row, "num_gpu", _get(record, at["num_gpu"]), minimum=0)
            if gpus == 0:
                skipped += 1
                continue
            created = _seconds(
                file,
                row,
                "creation_time",
                _get(record, at["creation_time"]),
                "a creation time in seconds",
            )
            scheduled = _float_or_none(_get(record, at["scheduled_time"]))
            began_column = "scheduled_time"
            if scheduled is None or scheduled < created:
                scheduled, began_column = created, "creation_time"
            deleted_text = _get(record, at["deletion_time"])
            deleted = _seconds(
                file, row, "deletion_time", deleted_text, "a deletion time in seconds"
            )
            if deleted < scheduled:
                raise _bad(
                    file,
                    row,
                    "deletion_time",
                    deleted_text,
                    f"a time at or after {began_column} ({scheduled:g})",
                )
            if not math.isfinite(deleted - scheduled):  # 1e308 after -1e308: no duration
                raise _bad(
                    file,
                    row,
                    "deletion_time",
                    deleted_text,
                    f"a time a finite number of seconds after {began_column} ({scheduled:g})",
                )
            spec = _get(record, at["gpu_spec"]).split("|", 1)[0].strip()
            project = _get(record, at["qos"]) or DEFAULT_PROJECT
            raws.append(_Raw(row, created, deleted - scheduled, gpus, project, spec or None))
    if not raws:
        raise _no_jobs(file, f"no GPU pods; {skipped} CPU-only pods skipped")
    return _build(p.stem, file, "creation_time", raws, None), skipped


def read_alibaba(path: str | Path) -> Trace:
    """Read an Alibaba openb pod list; CPU-only pods are skipped.

    See :func:`read_alibaba_with_skipped` for the rules and for the number skipped.
    """
    return read_alibaba_with_skipped(path)[0]


# -- generic ----------------------------------------------------------------------------------


def parse_columns(spec: str) -> dict[str, str]:
    """Parse the command-line form ``submit=COL,duration=COL,gpus=COL[,project=COL]``.

    Parts are split on commas, then each on its first ``=``, so a column name may contain
    spaces or ``=`` but not a comma. Surrounding whitespace is dropped. Roles are those of
    :data:`GENERIC_ROLES`; which combinations are valid is checked by :func:`read_generic`.
    """
    known = ", ".join(GENERIC_ROLES)
    result: dict[str, str] = {}
    if not spec.strip():
        raise TraceError(f"--columns is empty: expected ROLE=COLUMN pairs, roles {known}")
    for part in spec.split(","):
        role, sep, column = part.partition("=")
        role, column = role.strip(), column.strip()
        if not sep or not role or not column:
            raise TraceError(
                f"--columns part {part!r}: expected ROLE=COLUMN (e.g. 'gpus=num_gpus'), "
                f"roles {known}"
            )
        if role not in GENERIC_ROLES:
            raise TraceError(f"--columns part {part!r}: unknown role {role!r}; roles are {known}")
        if role in result:
            raise TraceError(f"--columns: role {role!r} is given more than once")
        result[role] = column
    return result


def _check_roles(columns: Mapping[str, str]) -> None:
    known = ", ".join(GENERIC_ROLES)
    unknown = [role for role in columns if role not in GENERIC_ROLES]
    if unknown:
        names = ", ".join(repr(role) for role in unknown)
        raise TraceError(f"columns: unknown role {names}; roles are {known}")
    for role in ("submit", "gpus"):
        if role not in columns:
            raise TraceError(f"columns: the {role!r} role is required (roles are {known})")
    if ("duration" in columns) == ("end" in columns):
        raise TraceError("columns: map exactly one of 'duration' (seconds) or 'end' (a time)")
    for role, column in columns.items():
        if not column.strip():
            raise TraceError(f"columns: role {role!r} is mapped to an empty column name")


def read_generic(
    path: str | Path,
    columns: Mapping[str, str],
    time_format: TimeFormat,
    datetime_format: str | None = None,
) -> Trace:
    """Read any CSV trace whose columns are mapped to roles.

    ``columns`` maps a role to a column name in the header. Required: ``submit`` and ``gpus``
    (a whole number >= 1), and exactly one of ``duration`` (seconds, >= 0) or ``end`` (a time
    at or after the submit). Optional: ``project`` (empty or unmapped -> ``"default"``) and
    ``model`` (the GPU model, empty -> ``None``).

    ``time_format`` says how ``submit`` and ``end`` are written: ``"seconds"`` -- numbers of
    seconds in any common base; ``"datetime"`` -- ISO 8601 (:meth:`datetime.fromisoformat`),
    or the :func:`~datetime.datetime.strptime` format ``datetime_format`` when given. Naive
    date-times are taken as UTC. ``duration`` is always seconds. With date-times the trace's
    ``start_time`` is the earliest submission; with seconds it is ``None``.
    """
    p = Path(path)
    file = p.name
    _check_roles(columns)
    if time_format not in ("seconds", "datetime"):
        raise TraceError(f"time format {time_format!r}: expected 'seconds' or 'datetime'")
    if datetime_format is not None and time_format != "datetime":
        raise TraceError("a datetime format only applies when the time format is 'datetime'")

    if datetime_format is None:
        time_expected = (
            "a number of seconds"
            if time_format == "seconds"
            else "an ISO 8601 date-time (e.g. 2024-03-01T09:30:00)"
        )
    else:
        time_expected = f"a date-time in the format {datetime_format!r}"

    def parse_time(row: int, column: str, text: str) -> float | datetime:
        if time_format == "seconds":
            return _seconds(file, row, column, text, time_expected)
        try:
            if datetime_format is None:
                return _as_utc(datetime.fromisoformat(text))
            return _as_utc(datetime.strptime(text, datetime_format))
        except ValueError:
            raise _bad(file, row, column, text, time_expected) from None

    names = {role: column.strip() for role, column in columns.items()}
    submit_col, gpus_col = names["submit"], names["gpus"]
    duration_col, end_col = names.get("duration"), names.get("end")
    project_col, model_col = names.get("project"), names.get("model")

    submits: list[float | datetime] = []
    raws: list[_Raw] = []
    with _open(p) as f:
        records = _records(f, file)
        header_row, header = _header(records, file)
        at = _locate(file, header_row, header, names)
        for row, record in records:
            submit_text = _get(record, at["submit"])
            submit = parse_time(row, submit_col, submit_text)
            if duration_col is not None:
                duration = _duration(file, row, duration_col, _get(record, at["duration"]))
            else:
                assert end_col is not None  # _check_roles: exactly one of the two
                end_text = _get(record, at["end"])
                end = parse_time(row, end_col, end_text)
                # parse_time returns the same type for both under one time format.
                if isinstance(end, datetime) and isinstance(submit, datetime):
                    duration = _seconds_since(end, submit)
                elif isinstance(end, float) and isinstance(submit, float):
                    duration = end - submit
                else:  # pragma: no cover - unreachable
                    raise AssertionError("mixed time types")
                if not duration >= 0 or not math.isfinite(duration):
                    raise _bad(
                        file,
                        row,
                        end_col,
                        end_text,
                        f"a time at or after the submit time ({submit_col!r}: {submit_text!r})",
                    )
            gpus = _gpus(file, row, gpus_col, _get(record, at["gpus"]))
            project = DEFAULT_PROJECT
            if project_col is not None:
                project = _get(record, at["project"]) or DEFAULT_PROJECT
            model: str | None = None
            if model_col is not None:
                model = _get(record, at["model"]) or None
            submits.append(submit)
            raws.append(_Raw(row, 0.0, duration, gpus, project, model))
    if not raws:
        raise _no_jobs(file)

    start_time: datetime | None = None
    stamps = [s for s in submits if isinstance(s, datetime)]
    if stamps:
        start_time = min(stamps)
        for raw, stamp in zip(raws, stamps, strict=True):
            raw.submit_s = _seconds_since(stamp, start_time)
    else:
        for raw, seconds in zip(raws, submits, strict=True):
            assert isinstance(seconds, float)
            raw.submit_s = seconds
    return _build(p.stem, file, submit_col, raws, start_time)


# -- format detection and dispatch ------------------------------------------------------------


def detect_format(path: str | Path) -> TraceFormat:
    """Tell the format by the header row: ``philly`` or ``alibaba`` when the header has all
    the columns that reader needs (see :data:`PHILLY_COLUMNS`, :data:`ALIBABA_COLUMNS`),
    otherwise ``generic``. An empty file is a :class:`TraceError` ("no jobs")."""
    p = Path(path)
    with _open(p) as f:
        _, header = _header(_records(f, p.name), p.name)
    names = set(header)
    if names.issuperset(PHILLY_COLUMNS):
        return "philly"
    if names.issuperset(ALIBABA_COLUMNS):
        return "alibaba"
    return "generic"


def load_trace(
    path: str | Path,
    fmt: Literal["auto", "philly", "alibaba", "generic"] = "auto",
    columns: Mapping[str, str] | None = None,
    time_format: TimeFormat = "seconds",
    datetime_format: str | None = None,
) -> Trace:
    """Read a trace in the given format, or the detected one when ``fmt`` is ``"auto"``.

    ``columns`` (see :func:`read_generic`) is only for the generic format, which needs it;
    with ``fmt="auto"``, passing ``columns`` means generic whatever the header looks like.
    ``time_format`` and ``datetime_format`` only apply to the generic format.
    """
    p = Path(path)
    if fmt not in ("auto", "philly", "alibaba", "generic"):
        raise TraceError(f"trace format {fmt!r}: expected auto, philly, alibaba or generic")
    chosen: TraceFormat
    if fmt != "auto":
        chosen = fmt
    elif columns is not None:
        chosen = "generic"
    else:
        chosen = detect_format(p)
    if chosen != "generic" and columns is not None:
        raise TraceError(f"--columns is only for the generic format, not {chosen}")
    if chosen == "philly":
        return read_philly(p)
    if chosen == "alibaba":
        return read_alibaba(p)
    if columns is None:
        if fmt == "auto":
            raise TraceError(
                f"{p.name}: not a known trace format (philly, alibaba) by its header; "
                "pass --columns to say which columns hold submit, duration or end, gpus "
                "(e.g. --columns 'submit=start,duration=secs,gpus=n')"
            )
        raise TraceError(
            "the generic format needs --columns, e.g. --columns 'submit=start,duration=secs,gpus=n'"
        )
    return read_generic(p, columns, time_format, datetime_format)
