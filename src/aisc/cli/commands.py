"""The API commands: what applicants, reviewers, operators and the funder type.

Each command is a thin wrapper over one or two calls to the server; every refusal the server
sends back is printed as one line on stderr with exit status 1.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from aisc.cli.client import ApiError, Client, save_config
from aisc.cli.output import console, fail
from aisc.domain.money import format_cents, format_rate

JSON_HELP = "Print the server's JSON instead of a table."

# -- plumbing ----------------------------------------------------------------------------------


def _fail(message: object) -> NoReturn:
    """One line on stderr, exit 1 (`fail` escapes Rich markup in server text)."""
    fail(" ".join(str(message).split()))


def _client() -> Client:
    try:
        return Client.from_environment()
    except ApiError as exc:
        _fail(exc)


def _get(path: str, params: Mapping[str, Any] | None = None, client: Client | None = None) -> Any:
    try:
        return (client or _client()).get(path, params)
    except ApiError as exc:
        _fail(exc)


def _post(path: str, body: Mapping[str, Any] | None = None) -> Any:
    try:
        return _client().post(path, body)
    except ApiError as exc:
        _fail(exc)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _hkd(cents: int | None) -> str:
    return "" if cents is None else f"HK${format_cents(int(cents))}"


def _hours(value: float | None) -> str:
    """GPU-hours to two decimals; to four when a short job would otherwise show as 0.00."""
    if value is None:
        return ""
    return f"{value:,.4f}" if 0 < abs(value) < 1 else f"{value:,.2f}"


def _when(value: str | None) -> str:
    """ISO timestamps from the API, shortened to the second for tables."""
    if not value:
        return ""
    return value.replace("T", " ")[:19]


WRAPPING = {
    "Name",
    "Title",
    "Scheme",
    "Period",
    "Rates",
    "Scores",
    "Comment",
    "Rubric",
    "Eligible",
    "Email",
    "Sector",
}


def _table(title: str | None, columns: Sequence[str], right: Iterable[str] = ()) -> Table:
    """Numbers (right-aligned) and short codes never wrap; names and prose take what is left."""
    table = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    keep_right = set(right)
    for name in columns:
        table.add_column(
            name,
            justify="right" if name in keep_right else "left",
            no_wrap=name not in WRAPPING,
            overflow="fold",
            min_width=max(len(name), 14) if name in WRAPPING else None,
        )
    return table


def _show(title: str, pairs: Sequence[tuple[str, object]]) -> None:
    """A record as aligned `field  value` lines."""
    table = Table(title=title, title_justify="left", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in pairs:
        table.add_row(key, escape("" if value is None else str(value)))
    console.print(table)


def _cell(value: object) -> str:
    return escape("" if value is None else str(value))


def _date(value: str, option: str) -> str:
    try:
        return date.fromisoformat(value.strip()).isoformat()
    except ValueError:
        _fail(f"{option} must be a date like 2026-01-31, not {value!r}")


def _key_value(text: str, option: str, what: str) -> tuple[str, int]:
    """'name=7' -> ('name', 7), split on the last '=' so names may contain '=' too."""
    name, sep, number = text.rpartition("=")
    name = name.strip()
    if not sep or not name:
        _fail(f"{option} must look like 'name={what}', not {text!r}")
    try:
        return name, int(number.strip())
    except ValueError:
        _fail(f"{option} {name!r} needs a whole number after '=', not {number.strip()!r}")


def _pairs(values: Sequence[str], option: str, what: str) -> dict[str, int]:
    result: dict[str, int] = {}
    for text in values:
        name, number = _key_value(text, option, what)
        if name in result:
            _fail(f"{option} {name!r} is given twice")
        result[name] = number
    return result


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+)\s*([smhd])")


def parse_duration(text: str) -> int:
    """'90' or '90s' -> 90, '10m' -> 600, '2h' -> 7200, '1d' -> 86400, '1h30m' -> 5400."""
    cleaned = text.strip().lower()
    if cleaned.isdigit():
        seconds = int(cleaned)
    else:
        parts = _DURATION.findall(cleaned)
        if not parts or _DURATION.sub("", cleaned).strip():
            raise ValueError(text)
        seconds = sum(int(n) * DURATION_UNITS[unit] for n, unit in parts)
    if seconds < 1:
        raise ValueError(text)
    return seconds


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# -- login, whoami, status ---------------------------------------------------------------------


def login(
    url: str = typer.Option(None, "--url", help="Server URL, e.g. http://127.0.0.1:8000."),
    token: str = typer.Option(..., "--token", help="Your API token (from `aisc token issue`)."),
) -> None:
    """Check a token against the server, then save the URL and token for later commands."""
    server = url or _client().url
    client = Client(server, token)
    me = _get("/me", client=client)
    try:
        path = save_config(client.url, token)
    except ApiError as exc:
        _fail(exc)
    console.print(
        f"Logged in to {escape(client.url)} as {escape(me['name'])} ({me['role']}); "
        f"saved to {escape(str(path))}",
        highlight=False,
        soft_wrap=True,
    )


def whoami(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Who the saved or given token belongs to."""
    client = _client()
    me = _get("/me", client=client)
    if as_json:
        _print_json(me)
        return
    org = f", organisation {me['org_id']}" if me.get("org_id") is not None else ""
    console.print(
        f"{escape(me['name'])} ({me['role']}), user {me['user_id']}{org}, at {escape(client.url)}",
        highlight=False,
        soft_wrap=True,
    )


def status(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Whether the server is up, and which database and executor it uses (no token needed)."""
    client = _client()
    health = _get("/health", client=client)
    if as_json:
        _print_json(health)
        return
    controller = "running" if health.get("controller") else "stopped"
    backend = str(health.get("backend"))
    if health.get("backend_status", "ok") != "ok":
        backend += f" {health.get('backend_status')}"
    console.print(
        f"{escape(client.url)}: {health.get('status')} (database {health.get('database')}, "
        f"backend {escape(backend)}, controller {controller})",
        highlight=False,
        soft_wrap=True,
    )


# -- applications ------------------------------------------------------------------------------


def apply(
    scheme: int = typer.Option(None, "--scheme", help="The scheme to apply to (its id)."),
    title: str = typer.Option(None, "--title", help="The project's title."),
    gpu_model: str = typer.Option(None, "--gpu-model", help="GPU model, e.g. H800."),
    gpu_hours: int = typer.Option(None, "--gpu-hours", help="GPU-hours requested."),
    starts: str = typer.Option(None, "--starts", help="First day of use, YYYY-MM-DD."),
    ends: str = typer.Option(None, "--ends", help="Last day of use, YYYY-MM-DD."),
    justification: str = typer.Option(
        None,
        "--justification",
        help="Why this much compute: model size, data, batch size, precision, training or "
        "inference.",
    ),
    intended_use: str = typer.Option(
        None, "--intended-use", help="What the resulting model or system will be used for."
    ),
    personal_data: bool = typer.Option(
        None,
        "--personal-data/--no-personal-data",
        help="Whether the work processes personal data (one of the two is required).",
    ),
    personal_data_details: str = typer.Option(
        "", "--personal-data-details", help="What personal data, and how it is protected."
    ),
    risk_tier: str = typer.Option(
        None, "--risk-tier", help="Risk tier of the intended use: minimal, limited or high."
    ),
    human_oversight: str = typer.Option(
        None, "--human-oversight", help="How people oversee the system's outputs."
    ),
    file: Path = typer.Option(
        None,
        "--file",
        help="Read the whole application from a JSON file in the API's format instead.",
        dir_okay=False,
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Apply to a scheme for subsidised GPU-hours."""
    fields = {
        "--scheme": scheme,
        "--title": title,
        "--gpu-model": gpu_model,
        "--gpu-hours": gpu_hours,
        "--starts": starts,
        "--ends": ends,
        "--justification": justification,
        "--intended-use": intended_use,
        "--personal-data/--no-personal-data": personal_data,
        "--risk-tier": risk_tier,
        "--human-oversight": human_oversight,
    }
    if file is not None:
        given = [name for name, value in fields.items() if value is not None]
        if given or personal_data_details:
            _fail(f"use either --file or the options, not both (also given: {', '.join(given)})")
        try:
            body = json.loads(file.read_text(encoding="utf-8"))
        except OSError as exc:
            _fail(f"cannot read {file}: {exc.strerror or exc}")
        except ValueError as exc:
            _fail(f"{file} is not valid JSON: {exc}")
        if not isinstance(body, dict):
            _fail(f"{file} must hold a JSON object")
    else:
        missing = [name for name, value in fields.items() if value is None]
        if missing:
            _fail(f"missing {', '.join(missing)} (or give the whole application with --file)")
        body = {
            "scheme_id": scheme,
            "title": title,
            "gpu_model": gpu_model,
            "gpu_hours": gpu_hours,
            "starts_on": _date(starts, "--starts"),
            "ends_on": _date(ends, "--ends"),
            "justification": justification,
            "governance": {
                "intended_use": intended_use,
                "personal_data": personal_data,
                "personal_data_details": personal_data_details,
                "risk_tier": risk_tier,
                "human_oversight": human_oversight,
            },
        }
    created = _post("/applications", body)
    if as_json:
        _print_json(created)
        return
    console.print(
        f"Application {created['id']} submitted: {escape(created['title'])} "
        f"({created['gpu_hours']:,} {created['gpu_model']} GPU-hours, {created['status']})",
        highlight=False,
        soft_wrap=True,
    )


def list_applications(
    status: str = typer.Option(
        None, "--status", help="Only applications in this status (submitted, approved, rejected)."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Applications you can see: your organisation's, or all of them for staff."""
    apps = _get("/applications", {"status": status} if status else None)
    if as_json:
        _print_json(apps)
        return
    table = _table(
        "Applications",
        ["ID", "Title", "Org", "Scheme", "GPU", "GPU-hours", "Status", "Submitted"],
        right=["ID", "Org", "Scheme", "GPU-hours"],
    )
    for a in apps:
        table.add_row(
            str(a["id"]),
            _cell(a["title"]),
            str(a["org_id"]),
            str(a["scheme_id"]),
            _cell(a["gpu_model"]),
            f"{a['gpu_hours']:,}",
            a["status"],
            _when(a["submitted_at"]),
        )
    console.print(table)


def show_application(
    application_id: int = typer.Argument(..., help="The application's id."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """One application, with its decision if there is one."""
    client = _client()
    app = _get(f"/applications/{application_id}", client=client)
    try:
        decision = client.get(f"/applications/{application_id}/decision")
    except ApiError as exc:
        if exc.status != 404:
            _fail(exc)
        decision = None
    if as_json:
        _print_json({**app, "decision": decision})
        return
    pairs: list[tuple[str, object]] = [
        ("Title", app["title"]),
        ("Status", app["status"]),
        ("Scheme", app["scheme_id"]),
        ("Organisation", app["org_id"]),
        ("Applicant", app["applicant_id"]),
        ("GPU-hours", f"{app['gpu_hours']:,} {app['gpu_model']}"),
        ("Period", f"{app['starts_on']} to {app['ends_on']}"),
        ("Justification", app["justification"]),
        ("Intended use", app["intended_use"]),
        ("Personal data", "yes" if app["personal_data"] else "no"),
    ]
    if app["personal_data_details"]:
        pairs.append(("Personal data details", app["personal_data_details"]))
    pairs += [
        ("Risk tier", app["risk_tier"]),
        ("Human oversight", app["human_oversight"]),
        ("Submitted", _when(app["submitted_at"])),
    ]
    if decision is None:
        pairs.append(("Decision", "none yet"))
    else:
        pairs.append(("Decision", f"{decision['outcome']} on {_when(decision['decided_at'])}"))
        if decision.get("allocation_id") is not None:
            pairs.append(("Allocation", decision["allocation_id"]))
        for key, label in (
            ("reasons", "Reasons"),
            ("conditions", "Conditions"),
            ("rate_reason", "Rate reason"),
        ):
            if decision.get(key):
                pairs.append((label, decision[key]))
    _show(f"Application {app['id']}", pairs)


# -- jobs --------------------------------------------------------------------------------------


def submit(
    command: list[str] = typer.Argument(
        ..., help="The command to run and its arguments (put them after --)."
    ),
    allocation: int = typer.Option(..., "--allocation", help="The allocation to charge."),
    gpus: int = typer.Option(..., "--gpus", help="How many GPUs the job needs (one node)."),
    time_limit: str = typer.Option(
        ...,
        "--time-limit",
        help="Wall-clock limit: seconds (90), or 90s, 10m, 2h, 1d. The quota check reserves "
        "GPUs x this limit.",
    ),
    name: str = typer.Option("", "--name", help="A name for the job (default: the program)."),
    priority: int = typer.Option(0, "--priority", help="-10 to 10; only operators may go above 0."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Queue a job: aisc submit --allocation 1 --gpus 1 --time-limit 10m -- CMD [ARGS...]."""
    try:
        seconds = parse_duration(time_limit)
    except ValueError:
        _fail(f"--time-limit must look like 90, 90s, 10m, 2h or 1d, not {time_limit!r}")
    job = _post(
        "/jobs",
        {
            "allocation_id": allocation,
            "command": list(command),
            "gpus": gpus,
            "time_limit_s": seconds,
            "name": name,
            "priority": priority,
        },
    )
    if as_json:
        _print_json(job)
        return
    console.print(
        f"Job {job['id']} {job['state']}: {escape(job['name'])} on {job['gpus']} "
        f"{job['gpu_model']} GPU(s), limit {_duration(job['time_limit_s'])}",
        highlight=False,
        soft_wrap=True,
    )


def _job_rows(table: Table, items: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
    for first, j in items:
        table.add_row(
            first,
            str(j["id"]),
            _cell(j["name"]),
            str(j["allocation_id"]),
            f"{j['gpus']} {j['gpu_model']}",
            j["state"],
            _cell(j.get("node")),
            _when(j["submitted_at"]),
        )


def list_jobs(
    state: list[str] = typer.Option(
        None, "--state", help="Only jobs in this state (repeatable): queued, running, completed..."
    ),
    allocation: int = typer.Option(None, "--allocation", help="Only this allocation's jobs."),
    limit: int = typer.Option(200, "--limit", help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Jobs you can see, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if state:
        params["state"] = list(state)
    if allocation is not None:
        params["allocation_id"] = allocation
    found = _get("/jobs", params)
    if as_json:
        _print_json(found)
        return
    table = _table(
        "Jobs",
        ["ID", "Name", "Allocation", "GPUs", "State", "Exit", "Node", "Submitted"],
        right=["ID", "Allocation", "Exit"],
    )
    for j in found:
        table.add_row(
            str(j["id"]),
            _cell(j["name"]),
            str(j["allocation_id"]),
            f"{j['gpus']} {j['gpu_model']}",
            j["state"],
            _cell(j.get("exit_code")),
            _cell(j.get("node")),
            _when(j["submitted_at"]),
        )
    console.print(table)


def show_job(
    job_id: int = typer.Argument(..., help="The job's id."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """One job: its state, where it ran and how it ended."""
    job = _get(f"/jobs/{job_id}")
    if as_json:
        _print_json(job)
        return
    gpus = f"{job['gpus']} {job['gpu_model']}"
    if job.get("gpu_indices"):
        gpus += f" (GPUs {', '.join(str(i) for i in job['gpu_indices'])})"
    _show(
        f"Job {job['id']}",
        [
            ("Name", job["name"]),
            ("State", job["state"] + (" (cancel requested)" if job["cancel_requested"] else "")),
            ("Reason", job["reason"]),
            ("Command", " ".join(job["argv"])),
            ("Allocation", job["allocation_id"]),
            ("User", job["user_id"]),
            ("GPUs", gpus),
            ("Node", job.get("node")),
            ("Time limit", _duration(job["time_limit_s"])),
            ("Priority", job["priority"]),
            ("Submitted", _when(job["submitted_at"])),
            ("Started", _when(job.get("started_at"))),
            ("Ended", _when(job.get("ended_at"))),
            ("Exit code", job.get("exit_code")),
        ],
    )


def queue(
    why: int = typer.Option(
        None, "--why", metavar="JOB", help="Explain why this job waits, instead of the list."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Running jobs, then queued jobs in the order the scheduler will consider them."""
    if why is not None:
        _explain(why, as_json)
        return
    entries = _get("/queue")
    if as_json:
        _print_json(entries)
        return
    table = _table(
        "Queue",
        ["Pos", "Job", "Name", "Allocation", "GPUs", "State", "Node", "Submitted"],
        right=["Pos", "Job", "Allocation"],
    )
    _job_rows(
        table,
        (("" if e["position"] is None else str(e["position"]), e["job"]) for e in entries),
    )
    console.print(table)


def _explain(job_id: int, as_json: bool) -> None:
    e = _get(f"/jobs/{job_id}/why")
    if as_json:
        _print_json(e)
        return
    pairs: list[tuple[str, object]] = [("State", e["state"]), ("Why", e["reason"])]
    if e["position"] is not None:
        pairs.append(("Position", f"{e['position']} in priority order"))
    if e["reserved_start"]:
        pairs.append(
            ("Reserved start", f"{e['reserved_start']} on {', '.join(e['reserved_nodes'])}")
        )
    f = e["factors"]
    if f:
        pairs.append(("Priority", f"{f['priority']:.0f}"))
        pairs.append(
            (
                "Factors",
                f"age {f['age']:.3f}, fair share {f['fairshare']:.3f}, "
                f"size {f['size']:.3f}, class {f['qos']:.3f}",
            )
        )
    _show(f"Job {job_id}", pairs)


def logs(
    job_id: int = typer.Argument(..., help="The job's id."),
    stderr: bool = typer.Option(False, "--stderr", help="Show standard error, not output."),
    tail: int = typer.Option(64_000, "--tail", help="Show at most the last BYTES bytes."),
) -> None:
    """Print a job's output as it is (the last 64 kB by default)."""
    text = _get(f"/jobs/{job_id}/logs", {"stream": "stderr" if stderr else "stdout", "tail": tail})
    if text:
        typer.echo(text if isinstance(text, str) else json.dumps(text), nl=False)


def cancel(
    job_id: int = typer.Argument(..., help="The job's id."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Cancel a queued job, or stop a running one (what it ran is still charged)."""
    job = _post(f"/jobs/{job_id}/cancel")
    if as_json:
        _print_json(job)
        return
    if job["state"] == "cancelled":
        console.print(f"Job {job['id']} cancelled.", highlight=False, soft_wrap=True)
    else:
        console.print(
            f"Job {job['id']} is {job['state']}: asked to stop; it will end as cancelled.",
            highlight=False,
            soft_wrap=True,
        )


def _allocation_pairs(a: Mapping[str, Any]) -> list[tuple[str, object]]:
    return [
        ("Name", a["name"]),
        ("Status", a["status"]),
        ("Organisation", a["org_id"]),
        ("Scheme", a["scheme_id"]),
        ("Application", a["application_id"]),
        ("GPU model", a["gpu_model"]),
        ("Period", f"{_when(a['starts_at'])} to {_when(a['ends_at'])}"),
        ("Subsidy rate", a["subsidy_rate"]),
        ("List price", f"{_hkd(a['price_cents_per_gpu_hour'])} per GPU-hour"),
        ("GPU-hours granted", _hours(a["gpu_hours_granted"])),
        ("GPU-hours used", _hours(a["gpu_hours_used"])),
        ("GPU-hours reserved", _hours(a["gpu_hours_reserved"])),
        ("GPU-hours available", _hours(a["gpu_hours_available"])),
        ("Subsidy awarded", _hkd(a["subsidy_commitment_cents"])),
        ("Subsidy committed", _hkd(a["subsidy_committed_cents"])),
        ("Subsidy reserved", _hkd(a["subsidy_reserved_cents"])),
        ("Subsidy spent", _hkd(a["subsidy_spent_cents"])),
        ("Conditions", a["conditions"]),
    ]


def usage(
    allocation: int = typer.Argument(None, help="One allocation's id (default: all you can see)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """GPU-hours granted, used, reserved and available, and the subsidy committed and spent."""
    if allocation is not None:
        one = _get(f"/allocations/{allocation}")
        if as_json:
            _print_json(one)
        else:
            _show(f"Allocation {one['id']}", _allocation_pairs(one))
        return
    found = _get("/allocations")
    if as_json:
        _print_json(found)
        return
    hours = ["Granted", "Used", "Reserved", "Available"]
    money = ["Committed", "Spent"]
    table = _table(
        "Allocations (GPU-hours; subsidy in HKD)",
        ["ID", "Name", "Status", *hours, *money],
        right=["ID", *hours, *money],
    )
    for a in found:
        table.add_row(
            str(a["id"]),
            _cell(a["name"]),
            a["status"],
            _hours(a["gpu_hours_granted"]),
            _hours(a["gpu_hours_used"]),
            _hours(a["gpu_hours_reserved"]),
            _hours(a["gpu_hours_available"]),
            _hkd(a["subsidy_committed_cents"]),
            _hkd(a["subsidy_spent_cents"]),
        )
    console.print(table)


def invoice(
    org_id: int = typer.Argument(..., help="The organisation's id."),
    month: str = typer.Argument(..., help="The month, YYYY-MM (UTC)."),
    csv_file: Path = typer.Option(
        None, "--csv", help="Also write the invoice as CSV to this file.", dir_okay=False
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """An organisation's monthly invoice: each job's charge, subsidy and co-pay."""
    client = _client()
    inv = _get(f"/invoices/{org_id}/{month}", client=client)
    if csv_file is not None:
        text = _get(f"/invoices/{org_id}/{month}/csv", client=client)
        try:
            csv_file.write_text(text, encoding="utf-8")
        except OSError as exc:
            _fail(f"cannot write {csv_file}: {exc.strerror or exc}")
    if as_json:
        _print_json(inv)
        return
    table = _table(
        f"Invoice {inv['number']}: {escape(inv['org_name'])}, {inv['month']}",
        ["Job", "Name", "Alloc", "GPUs", "GPU-hours", "Rate", "Charge", "Subsidy", "Co-pay"],
        right=["Job", "Alloc", "GPUs", "GPU-hours", "Rate", "Charge", "Subsidy", "Co-pay"],
    )
    for line in inv["lines"]:
        table.add_row(
            str(line["job_id"]),
            _cell(line["job_name"]),
            str(line["allocation_id"]),
            f"{line['gpus']} {line['gpu_model']}",
            f"{line['gpu_seconds'] / 3600:,.4f}",
            format_rate(line["rate_bp"]),
            _hkd(line["charge_cents"]),
            _hkd(line["subsidy_cents"]),
            _hkd(line["copay_cents"]),
        )
    table.add_section()
    table.add_row(
        "Total",
        f"{len(inv['lines'])} job(s)",
        "",
        "",
        f"{sum(line['gpu_seconds'] for line in inv['lines']) / 3600:,.4f}",
        "",
        _hkd(inv["charge_cents"]),
        _hkd(inv["subsidy_cents"]),
        _hkd(inv["copay_cents"]),
        style="bold",
    )
    console.print(table)
    console.print(
        f"Co-pay due: {_hkd(inv['copay_cents'])} (charge {_hkd(inv['charge_cents'])} less "
        f"subsidy {_hkd(inv['subsidy_cents'])})",
        highlight=False,
        soft_wrap=True,
    )
    if csv_file is not None:
        console.print(f"CSV written to {escape(str(csv_file))}", highlight=False, soft_wrap=True)


# -- reviewers ---------------------------------------------------------------------------------


def review(
    application_id: int = typer.Argument(..., help="The application's id."),
    score: list[str] = typer.Option(
        ...,
        "--score",
        help="A criterion's score, 'criterion=7' (0 to 10); repeat for every criterion.",
    ),
    recommend: str = typer.Option(
        ..., "--recommend", help="Your recommendation: approve, reject or revise."
    ),
    comment: str = typer.Option("", "--comment", help="Comments for the committee."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Score an application against its scheme's rubric."""
    scores = _pairs(score, "--score", "7")
    created = _post(
        f"/applications/{application_id}/reviews",
        {"scores": scores, "recommendation": recommend, "comment": comment},
    )
    if as_json:
        _print_json(created)
        return
    console.print(
        f"Review {created['id']} of application {application_id}: weighted score "
        f"{created['weighted_score']:.2f} of 100, recommends {created['recommendation']}",
        highlight=False,
        soft_wrap=True,
    )


def conflict(
    application_id: int = typer.Argument(..., help="The application's id."),
    reason: str = typer.Option(..., "--reason", help="What the conflict of interest is."),
) -> None:
    """Declare a conflict of interest: you will not review this application."""
    _post(f"/applications/{application_id}/conflicts", {"reason": reason})
    console.print(
        f"Conflict of interest with application {application_id} declared.",
        highlight=False,
        soft_wrap=True,
    )


def list_reviews(
    application_id: int = typer.Argument(..., help="The application's id."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """An application's reviews (a reviewer sees only their own)."""
    found = _get(f"/applications/{application_id}/reviews")
    if as_json:
        _print_json(found)
        return
    table = _table(
        f"Reviews of application {application_id}",
        ["ID", "Reviewer", "Weighted", "Recommends", "Scores", "Comment"],
        right=["ID", "Reviewer", "Weighted"],
    )
    for r in found:
        scores = ", ".join(f"{k}={v}" for k, v in r["scores"].items())
        table.add_row(
            str(r["id"]),
            str(r["reviewer_id"]),
            f"{r['weighted_score']:.2f}",
            r["recommendation"],
            _cell(scores),
            _cell(r["comment"]),
        )
    console.print(table)


# -- operators ---------------------------------------------------------------------------------

scheme_app = typer.Typer(
    help="Subsidy schemes: a fund, a period, rates and a rubric.", no_args_is_help=True
)


@scheme_app.command("create")
def scheme_create(
    name: str = typer.Option(..., "--name", help="The scheme's name."),
    fund_hkd: str = typer.Option(..., "--fund-hkd", help="The fund in HKD, e.g. 3000000000."),
    starts: str = typer.Option(..., "--starts", help="First day, YYYY-MM-DD."),
    ends: str = typer.Option(..., "--ends", help="Last day, YYYY-MM-DD."),
    default_rate: str = typer.Option(
        None, "--default-rate", help="Subsidy rate unless a decision says otherwise (0.70)."
    ),
    max_rate: str = typer.Option(
        None, "--max-rate", help="Highest rate a decision may grant, with a reason (0.90)."
    ),
    eligible: str = typer.Option(
        None,
        "--eligible",
        help="Comma-separated applicant categories, e.g. university,startup (default: "
        "university, research_institute, startup, enterprise).",
    ),
    criterion: list[str] = typer.Option(
        ...,
        "--criterion",
        help="A rubric criterion and its weight, 'name=25'; repeat; weights sum to 100.",
    ),
    min_reviews: int = typer.Option(
        None, "--min-reviews", help="Reviews needed before a decision (2)."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Create a scheme and fund it in the ledger."""
    body: dict[str, Any] = {
        "name": name,
        "fund_total_hkd": fund_hkd.replace(",", "").strip(),
        "starts_on": _date(starts, "--starts"),
        "ends_on": _date(ends, "--ends"),
        "rubric": _pairs(criterion, "--criterion", "25"),
    }
    if default_rate is not None:
        body["default_rate"] = default_rate.strip()
    if max_rate is not None:
        body["max_rate"] = max_rate.strip()
    if eligible is not None:
        body["eligible_categories"] = [c.strip() for c in eligible.split(",") if c.strip()]
    if min_reviews is not None:
        body["min_reviews"] = min_reviews
    created = _post("/schemes", body)
    if as_json:
        _print_json(created)
        return
    console.print(
        f"Scheme {created['id']} created: {escape(created['name'])}, fund "
        f"{_hkd(created['fund_total_cents'])}, {created['starts_on']} to {created['ends_on']}",
        highlight=False,
        soft_wrap=True,
    )


@scheme_app.command("list")
def scheme_list(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """All schemes."""
    found = _get("/schemes")
    if as_json:
        _print_json(found)
        return
    if not found:
        console.print("No schemes yet.", highlight=False)
    for number, s in enumerate(found):
        if number:
            console.print()
        rubric = ", ".join(f"{k} {v}" for k, v in s["rubric"].items())
        _show(
            f"Scheme {s['id']}: {escape(s['name'])}",
            [
                ("Fund", _hkd(s["fund_total_cents"])),
                ("Period", f"{s['starts_on']} to {s['ends_on']}"),
                ("Subsidy rate", f"{s['default_rate']} (up to {s['max_rate']} with a reason)"),
                ("Eligible", ", ".join(s["eligible_categories"])),
                ("Rubric", rubric),
                ("Reviews needed", s["min_reviews"]),
            ],
        )


rates_app = typer.Typer(help="The rate card: list prices per GPU-hour.", no_args_is_help=True)


def _effective(value: str) -> str:
    """An ISO date or date-time; without a time zone it is read as local time."""
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        _fail(f"--from must be an ISO date-time like 2026-01-01T00:00+08:00, not {value!r}")
    if when.tzinfo is None:
        when = when.astimezone()
    return when.isoformat()


@rates_app.command("set")
def rates_set(
    gpu_model: str = typer.Argument(..., help="GPU model, e.g. H800."),
    hkd_per_gpu_hour: str = typer.Argument(..., help="List price in HKD per GPU-hour, e.g. 36."),
    effective_from: str = typer.Option(
        None, "--from", help="When the price takes effect, ISO 8601 (default: now; never past)."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Set a GPU model's list price from now or a later moment."""
    body: dict[str, Any] = {
        "gpu_model": gpu_model,
        "hkd_per_gpu_hour": hkd_per_gpu_hour.replace(",", "").strip(),
    }
    if effective_from:
        body["effective_from"] = _effective(effective_from)
    rate = _post("/rates", body)
    if as_json:
        _print_json(rate)
        return
    console.print(
        f"{rate['gpu_model']}: {_hkd(rate['cents_per_gpu_hour'])} per GPU-hour from "
        f"{_when(rate['effective_from'])}",
        highlight=False,
        soft_wrap=True,
    )


@rates_app.command("list")
def rates_list(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Every price on the rate card, by model and date."""
    found = _get("/rates")
    if as_json:
        _print_json(found)
        return
    table = _table("Rate card", ["ID", "GPU", "Per GPU-hour", "Effective from"], right=["ID"])
    table.columns[2].justify = "right"
    for r in found:
        table.add_row(
            str(r["id"]),
            _cell(r["gpu_model"]),
            _hkd(r["cents_per_gpu_hour"]),
            _when(r["effective_from"]),
        )
    console.print(table)


def decide(
    application_id: int = typer.Argument(..., help="The application's id."),
    outcome: str = typer.Argument(..., help="approve or reject."),
    gpu_hours: int = typer.Option(None, "--gpu-hours", help="GPU-hours granted (approve)."),
    starts: str = typer.Option(None, "--starts", help="First day of the award (approve)."),
    ends: str = typer.Option(None, "--ends", help="Last day of the award, inclusive (approve)."),
    rate: str = typer.Option(
        None, "--rate", help="Subsidy rate, e.g. 0.85 (default: the scheme's default rate)."
    ),
    rate_reason: str = typer.Option(
        "", "--rate-reason", help="Why a rate above the scheme's default is justified."
    ),
    conditions: str = typer.Option("", "--conditions", help="Conditions of the award."),
    reasons: str = typer.Option("", "--reasons", help="Why the application is rejected."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Decide an application: approve with GPU-hours and dates, or reject with reasons."""
    outcome = outcome.strip().lower()
    body: dict[str, Any] = {"outcome": outcome}
    if outcome == "approve":
        missing = [
            name
            for name, value in (("--gpu-hours", gpu_hours), ("--starts", starts), ("--ends", ends))
            if value is None
        ]
        if missing:
            _fail(f"an approval needs {', '.join(missing)}")
        if reasons:
            _fail("--reasons is for a rejection; use --conditions for an approval")
        body.update(
            gpu_hours=gpu_hours,
            starts_on=_date(starts, "--starts"),
            ends_on=_date(ends, "--ends"),
            rate_reason=rate_reason,
            conditions=conditions,
        )
        if rate is not None:
            body["subsidy_rate"] = rate.strip()
    elif outcome == "reject":
        extra = [
            name
            for name, value in (
                ("--gpu-hours", gpu_hours),
                ("--starts", starts),
                ("--ends", ends),
                ("--rate", rate),
            )
            if value is not None
        ]
        if extra:
            _fail(f"a rejection takes only --reasons, not {', '.join(extra)}")
        if not reasons.strip():
            _fail("a rejection needs --reasons")
        body["reasons"] = reasons
    else:
        _fail(f"the outcome must be approve or reject, not {outcome!r}")
    decision = _post(f"/applications/{application_id}/decision", body)
    if as_json:
        _print_json(decision)
        return
    if decision["outcome"] == "approved" or decision.get("allocation_id") is not None:
        console.print(
            f"Application {application_id} approved: allocation {decision['allocation_id']}",
            highlight=False,
            soft_wrap=True,
        )
    else:
        console.print(
            f"Application {application_id} {decision['outcome']}.", highlight=False, soft_wrap=True
        )


def list_nodes(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """The cluster's nodes: GPUs busy and free, and the jobs on each."""
    found = _get("/nodes")
    if as_json:
        _print_json(found)
        return
    table = _table("Nodes", ["Node", "GPU", "GPUs", "Free", "Busy", "Jobs"], right=["GPUs", "Free"])
    for n in found:
        table.add_row(
            _cell(n["name"]),
            _cell(n["gpu_model"]),
            str(n["gpus"]),
            str(n["free_gpus"]),
            ", ".join(str(i) for i in n["busy_gpus"]),
            ", ".join(str(i) for i in n["jobs"]),
        )
    console.print(table)


org_app = typer.Typer(help="Organisations that apply for compute.", no_args_is_help=True)


@org_app.command("create")
def org_create(
    name: str = typer.Argument(..., help="The organisation's name."),
    category: str = typer.Option(
        ...,
        "--category",
        help="university, research_institute, startup, enterprise or government.",
    ),
    sector: str = typer.Option("", "--sector", help="Its sector, e.g. healthcare."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Register an organisation."""
    org = _post("/organisations", {"name": name, "category": category, "sector": sector})
    if as_json:
        _print_json(org)
        return
    console.print(
        f"Organisation {org['id']} created: {escape(org['name'])} ({org['category']})",
        highlight=False,
        soft_wrap=True,
    )


@org_app.command("list")
def org_list(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Organisations you can see."""
    found = _get("/organisations")
    if as_json:
        _print_json(found)
        return
    table = _table("Organisations", ["ID", "Name", "Category", "Sector"], right=["ID"])
    for o in found:
        table.add_row(str(o["id"]), _cell(o["name"]), o["category"], _cell(o["sector"]))
    console.print(table)


user_app = typer.Typer(help="Users and their roles.", no_args_is_help=True)


@user_app.command("create")
def user_create(
    name: str = typer.Argument(..., help="The person's name."),
    email: str = typer.Argument(..., help="Their email address."),
    role: str = typer.Option(..., "--role", help="applicant, reviewer, operator or funder."),
    org: int = typer.Option(
        None, "--org", help="Their organisation's id (required for applicants)."
    ),
    slurm_user: str = typer.Option(
        None, "--slurm-user", help="Their Unix user on the Slurm cluster (the Slurm backend)."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Add a user; then give them a token with `aisc token issue`."""
    user = _post(
        "/users",
        {"name": name, "email": email, "role": role, "org_id": org, "slurm_user": slurm_user},
    )
    if as_json:
        _print_json(user)
        return
    console.print(
        f"User {user['id']} created: {escape(user['name'])} <{escape(user['email'])}> "
        f"({user['role']})",
        highlight=False,
        soft_wrap=True,
    )


@user_app.command("list")
def user_list(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """All users."""
    found = _get("/users")
    if as_json:
        _print_json(found)
        return
    table = _table("Users", ["ID", "Name", "Email", "Role", "Org"], right=["ID", "Org"])
    for u in found:
        table.add_row(
            str(u["id"]), _cell(u["name"]), _cell(u["email"]), u["role"], _cell(u["org_id"])
        )
    console.print(table)


token_app = typer.Typer(help="API tokens.", no_args_is_help=True)


@token_app.command("issue")
def token_issue(
    user_id: int = typer.Argument(..., help="The user's id."),
    label: str = typer.Option("", "--label", help="A note to tell tokens apart."),
) -> None:
    """Issue an API token for a user and print it; it is shown only this once."""
    issued = _post(f"/users/{user_id}/tokens", {"label": label})
    typer.echo(issued["token"])


# -- the funder --------------------------------------------------------------------------------


def fund(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Each scheme's fund: total, available, committed and spent, and whether they add up."""
    found = _get("/fund")
    if as_json:
        _print_json(found)
        return
    table = _table(
        "Funds (HKD)",
        ["ID", "Scheme", "Total", "Available", "Committed", "Spent", "OK"],
        right=["ID", "Total", "Available", "Committed", "Spent"],
    )
    broken = []
    for f in found:
        adds_up = f["total_cents"] == (
            f["available_cents"] + f["committed_cents"] + f["spent_cents"]
        )
        if not adds_up:
            broken.append(str(f["scheme_id"]))
        table.add_row(
            str(f["scheme_id"]),
            _cell(f["name"]),
            _hkd(f["total_cents"]),
            _hkd(f["available_cents"]),
            _hkd(f["committed_cents"]),
            _hkd(f["spent_cents"]),
            "yes" if adds_up else "NO",
        )
    console.print(table)
    if broken:
        _fail(
            f"scheme(s) {', '.join(broken)}: total != available + committed + spent; "
            "run `aisc ledger verify`"
        )


ledger_app = typer.Typer(
    help="The hash-chained subsidy ledger: verify and export.", no_args_is_help=True
)


def _report(result: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(result)
        if not result["ok"]:
            raise typer.Exit(1)
        return
    if result["ok"]:
        console.print(escape(result["summary"]), highlight=False, soft_wrap=True)
        return
    for problem in result["problems"]:
        console.print(f"problem: {escape(problem)}", highlight=False, soft_wrap=True)
    where = f"; first bad transaction #{result['first_bad_seq']}" if result["first_bad_seq"] else ""
    _fail(
        f"the ledger does not verify: {len(result['problems'])} problem(s) in "
        f"{result['transactions']} transactions{where}"
    )


@ledger_app.command("verify")
def ledger_verify(
    file: Path = typer.Option(
        None,
        "--file",
        help="Verify an export offline, with no server, instead of the live ledger.",
        dir_okay=False,
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the verification as JSON."),
) -> None:
    """Recompute the hash chain and every balance; exit 0 only if the ledger is sound."""
    if file is None:
        _report(_get("/ledger/verify"), as_json)
        return
    from aisc.domain.errors import DomainError
    from aisc.services.audit import verify_export

    try:
        with file.open(encoding="utf-8") as stream:
            report = verify_export(stream)
    except OSError as exc:
        _fail(f"cannot read {file}: {exc.strerror or exc}")
    except UnicodeDecodeError:
        _fail(f"{file} is not a text file")
    except DomainError as exc:
        _fail(f"{file}: {exc.detail}")
    _report(
        {
            "ok": report.ok,
            "summary": report.summary(),
            "transactions": report.transactions,
            "head_hash": report.head_hash,
            "first_bad_seq": report.first_bad_seq,
            "problems": report.problems,
        },
        as_json,
    )


@ledger_app.command("export")
def ledger_export(
    file: Path = typer.Argument(..., help="Where to write the JSON Lines export.", dir_okay=False),
) -> None:
    """Download the whole ledger as JSON Lines, for offline `aisc ledger verify --file`."""
    try:
        _client().download("/ledger/export", file)
    except ApiError as exc:
        _fail(exc)
    count = None
    try:
        with file.open(encoding="utf-8") as f:
            for raw in f:
                if raw.strip():
                    last = json.loads(raw)
                    if isinstance(last, dict) and last.get("end"):
                        count = last.get("transactions")
    except (OSError, ValueError) as exc:
        _fail(f"the export in {file} is not readable: {exc}")
    if count is None:
        _fail(f"the export in {file} is truncated: its closing line is missing")
    console.print(
        f"Exported {count} transactions to {escape(str(file))}", highlight=False, soft_wrap=True
    )


# -- registration ------------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    """Add the API commands to the root `aisc` app."""
    for name, func, settings in (
        ("login", login, None),
        ("whoami", whoami, None),
        ("status", status, None),
        ("apply", apply, None),
        ("applications", list_applications, None),
        ("application", show_application, None),
        ("submit", submit, {"allow_interspersed_args": False}),
        ("jobs", list_jobs, None),
        ("job", show_job, None),
        ("queue", queue, None),
        ("logs", logs, None),
        ("cancel", cancel, None),
        ("usage", usage, None),
        ("invoice", invoice, None),
        ("review", review, None),
        ("conflict", conflict, None),
        ("reviews", list_reviews, None),
        ("decide", decide, None),
        ("nodes", list_nodes, None),
        ("fund", fund, None),
    ):
        app.command(name, context_settings=settings)(func)
    for name, sub in (
        ("scheme", scheme_app),
        ("rates", rates_app),
        ("org", org_app),
        ("user", user_app),
        ("token", token_app),
        ("ledger", ledger_app),
    ):
        app.add_typer(sub, name=name)
