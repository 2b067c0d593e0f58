"""The `aisc` CLI against a real server: every role's commands, over HTTP, with real jobs."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from aisc.cli.commands import parse_duration
from aisc.cli.main import app
from aisc.runtime import Runtime
from aisc.services.context import Actor
from tests.builders import Centre, add_org, award, build_centre
from tests.conftest import TokenFor
from tests.servers import free_port

pytestmark = pytest.mark.slow

PY = sys.executable
TODAY = date.today()

Cli = Callable[..., Result]


@pytest.fixture
def centre(runtime: Runtime) -> Centre:
    return build_centre(runtime.uow)


@pytest.fixture
def token(auth: TokenFor) -> Callable[[Actor], str]:
    def issue(actor: Actor) -> str:
        return auth(actor)["Authorization"].removeprefix("Bearer ")

    return issue


@pytest.fixture
def cli(live_server: str, tmp_path: Path) -> Cli:
    """Run `aisc ARGS` as the holder of `token` against the live server."""
    runner = CliRunner()

    def run(*args: str, token: str | None = None, **env: str | None) -> Result:
        environ: dict[str, str | None] = {
            "AISC_URL": live_server,
            "AISC_TOKEN": token,
            "AISC_CONFIG": str(tmp_path / "config" / "cli.json"),
            "COLUMNS": "220",
        }
        environ.update(env)
        return runner.invoke(app, list(args), env=environ, catch_exceptions=False)

    return run


def ok(result: Result) -> Result:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}"
    return result


def refused(result: Result, *fragments: str) -> str:
    """Exit 1 with one line on stderr naming each fragment; returns that line."""
    assert result.exit_code == 1, f"exit {result.exit_code}\n{result.output}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert lines[0].startswith("error: ")
    return lines[0]


def as_json(result: Result) -> Any:
    return json.loads(ok(result).stdout)


def wait_for_state(cli: Cli, tok: str, job_id: int, states: set[str], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = as_json(cli("job", str(job_id), "--json", token=tok))
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, f"job {job_id} stuck in {job['state']}"
        time.sleep(0.1)


def submit(cli: Cli, tok: str, allocation: int, *command: str, gpus: int = 1) -> int:
    result = cli(
        "submit",
        "--allocation",
        str(allocation),
        "--gpus",
        str(gpus),
        "--time-limit",
        "2m",
        "--json",
        "--",
        *command,
        token=tok,
    )
    return int(as_json(result)["id"])


# -- the basics --------------------------------------------------------------------------------


def test_help_for_every_group(cli: Cli) -> None:
    assert "submit" in ok(cli("--help")).stdout
    for group in ("scheme", "rates", "org", "user", "token", "ledger"):
        assert "Usage" in ok(cli(group, "--help")).stdout
    for command in ("apply", "submit", "review", "decide", "invoice", "usage"):
        assert "--json" in ok(cli(command, "--help")).stdout or command == "review"


def test_status_needs_no_token(cli: Cli) -> None:
    out = ok(cli("status")).stdout
    assert "ok" in out and "controller running" in out
    assert as_json(cli("status", "--json"))["status"] == "ok"


def test_whoami(cli: Cli, centre: Centre, token: Callable[[Actor], str]) -> None:
    out = ok(cli("whoami", token=token(centre.operator))).stdout
    assert "Olive Operator (operator)" in out
    me = as_json(cli("whoami", "--json", token=token(centre.funder)))
    assert me["role"] == "funder"


def test_no_token_gives_the_401_detail(cli: Cli, centre: Centre) -> None:
    refused(cli("whoami"), "Not authenticated", "an API token is required")
    refused(cli("jobs", token="aisc_not-a-token"), "the API token is not valid")


def test_unreachable_server(cli: Cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    line = refused(cli("status", AISC_URL=url), "cannot reach the aisc server at", url)
    assert "aisc serve" in line


def test_login_saves_a_private_config(
    cli: Cli, centre: Centre, token: Callable[[Actor], str], live_server: str, tmp_path: Path
) -> None:
    config = tmp_path / "config" / "cli.json"
    refused(cli("login", "--url", live_server, "--token", "aisc_wrong"), "not valid")
    assert not config.exists()
    tok = token(centre.operator)
    out = ok(cli("login", "--url", live_server, "--token", tok, AISC_URL=None)).stdout
    assert "Olive Operator" in out
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text()) == {"url": live_server, "token": tok}
    # no environment at all: the saved config is used
    out = ok(cli("whoami", AISC_URL=None, AISC_TOKEN=None)).stdout
    assert "Olive Operator (operator)" in out


def test_time_limits() -> None:
    assert parse_duration("90") == 90
    assert parse_duration("90s") == 90
    assert parse_duration("10m") == 600
    assert parse_duration("2h") == 7200
    assert parse_duration("1d") == 86400
    assert parse_duration("1h30m") == 5400
    for bad in ("", "0", "ten", "10x", "m", "-5", "1.5h", "10m junk"):
        with pytest.raises(ValueError):
            parse_duration(bad)


# -- operators ---------------------------------------------------------------------------------


def test_scheme_rubric_must_sum_to_100(
    cli: Cli, centre: Centre, token: Callable[[Actor], str]
) -> None:
    op = token(centre.operator)
    base = [
        "scheme",
        "create",
        "--fund-hkd",
        "3000000000",
        "--starts",
        "2026-01-01",
        "--ends",
        "2028-12-31",
        "--eligible",
        "university,startup",
    ]
    good = ["--criterion", "national alignment=40", "--criterion", "team's track record=60"]
    out = ok(cli(*base, "--name", "AISS", *good, "--default-rate", "0.70", token=op)).stdout
    assert "HK$3,000,000,000.00" in out
    schemes = as_json(cli("scheme", "list", "--json", token=op))
    created = next(s for s in schemes if s["name"] == "AISS")
    assert created["rubric"] == {"national alignment": 40, "team's track record": 60}
    assert created["eligible_categories"] == ["startup", "university"]

    bad = ["--criterion", "merit=50", "--criterion", "impact=40"]
    refused(cli(*base, "--name", "Short", *bad, token=op), "100")
    names = [s["name"] for s in as_json(cli("scheme", "list", "--json", token=op))]
    assert "Short" not in names and len(names) == 2
    assert "AISS" in ok(cli("scheme", "list", token=op)).stdout

    refused(cli(*base, "--name", "X", "--criterion", "merit", token=op), "--criterion")
    refused(cli(*base, "--name", "X", "--criterion", "a=b", token=op), "whole number")
    refused(
        cli(*base, "--name", "X", "--criterion", "a=50", "--criterion", "a=50", token=op), "twice"
    )


def test_rates_set_and_list(cli: Cli, centre: Centre, token: Callable[[Actor], str]) -> None:
    op = token(centre.operator)
    assert "HK$28.50 per GPU-hour" in ok(cli("rates", "set", "A100", "28.50", token=op)).stdout
    later = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0).isoformat()
    ok(cli("rates", "set", "A100", "30", "--from", later, token=op))
    rates = as_json(cli("rates", "list", "--json", token=op))
    assert [r["cents_per_gpu_hour"] for r in rates if r["gpu_model"] == "A100"] == [2850, 3000]
    assert "HK$36.00" in ok(cli("rates", "list", token=op)).stdout
    refused(cli("rates", "set", "A100", "30", "--from", "yesterday", token=op), "--from")
    refused(cli("rates", "set", "A100", "30", token=token(centre.funder)), "Forbidden")


def test_orgs_users_tokens_and_nodes(
    cli: Cli, centre: Centre, token: Callable[[Actor], str]
) -> None:
    op = token(centre.operator)
    org = as_json(cli("org", "create", "Kowloon AI", "--category", "startup", "--json", token=op))
    assert "Kowloon AI" in ok(cli("org", "list", token=op)).stdout
    user = as_json(
        cli(
            "user",
            "create",
            "Kit Lee",
            "kit@kowloon.test",
            "--role",
            "applicant",
            "--org",
            str(org["id"]),
            "--slurm-user",
            "kitlee",
            "--json",
            token=op,
        )
    )
    assert user["slurm_user"] == "kitlee"
    assert "kit@kowloon.test" in ok(cli("user", "list", token=op)).stdout
    refused(
        cli(
            "user",
            "create",
            "Bo",
            "bo@kowloon.test",
            "--role",
            "applicant",
            "--org",
            str(org["id"]),
            "--slurm-user",
            "Bo.Smith",
            token=op,
        ),
        "Bo.Smith",
    )
    issued = ok(cli("token", "issue", str(user["id"]), "--label", "laptop", token=op)).stdout
    me = as_json(cli("whoami", "--json", token=issued.strip()))
    assert me == {
        "user_id": user["id"],
        "name": "Kit Lee",
        "role": "applicant",
        "org_id": org["id"],
    }
    refused(cli("org", "create", "Bad", "--category", "charity", token=op), "unknown category")
    nodes = as_json(cli("nodes", "--json", token=op))
    assert [n["name"] for n in nodes] == ["node1", "node2"]
    assert "node1" in ok(cli("nodes", token=op)).stdout


# -- applications, reviews, decisions ----------------------------------------------------------


def apply_args(scheme_id: int, title: str = "Cantonese ASR") -> list[str]:
    return [
        "apply",
        "--scheme",
        str(scheme_id),
        "--title",
        title,
        "--gpu-model",
        "H800",
        "--gpu-hours",
        "500",
        "--starts",
        TODAY.isoformat(),
        "--ends",
        (TODAY + timedelta(days=60)).isoformat(),
        "--justification",
        "7B model, 2,000 h of speech, bf16, batch 256",
        "--intended-use",
        "Transcribing public hearings",
        "--no-personal-data",
        "--risk-tier",
        "limited",
        "--human-oversight",
        "Staff check every transcript",
        "--json",
    ]


def test_apply_review_and_decide(
    cli: Cli, centre: Centre, token: Callable[[Actor], str], tmp_path: Path
) -> None:
    applicant = add_org(centre, "Harbour University")
    org_id = centre.orgs["Harbour University"]
    tok = token(applicant)
    op = token(centre.operator)
    first = as_json(cli(*apply_args(centre.scheme_id), token=tok))
    assert first["status"] == "submitted" and first["org_id"] == org_id

    body = {
        "scheme_id": centre.scheme_id,
        "title": "Protein folding",
        "gpu_model": "H800",
        "gpu_hours": 200,
        "starts_on": TODAY.isoformat(),
        "ends_on": (TODAY + timedelta(days=30)).isoformat(),
        "justification": "Fine-tune a folding model",
        "governance": {
            "intended_use": "Research",
            "personal_data": False,
            "risk_tier": "minimal",
            "human_oversight": "Lab review",
        },
    }
    app_file = tmp_path / "app.json"
    app_file.write_text(json.dumps(body))
    out = ok(cli("apply", "--file", str(app_file), token=tok)).stdout
    assert "submitted" in out
    second = max(a["id"] for a in as_json(cli("applications", "--json", token=tok)))
    refused(cli("apply", "--file", str(app_file), "--title", "x", token=tok), "either --file")
    refused(cli("apply", "--scheme", "1", token=tok), "missing", "--title")
    assert "Cantonese ASR" in ok(cli("applications", "--status", "submitted", token=op)).stdout

    # a reviewer from the applicant's own organisation is refused
    insider = as_json(
        cli(
            "user",
            "create",
            "Insider",
            "insider@harbour.test",
            "--role",
            "reviewer",
            "--org",
            str(org_id),
            "--json",
            token=op,
        )
    )
    insider_token = ok(cli("token", "issue", str(insider["id"]), token=op)).stdout.strip()
    scores = [f"--score={k}=8" for k in ("alignment", "reasonableness", "merit", "team", "impact")]
    review = ["review", str(first["id"]), *scores, "--recommend", "approve"]
    result = cli(*review, token=insider_token)
    assert result.exit_code != 0
    refused(result, "Conflict of interest", "your own organisation")

    # a declared conflict is honoured
    conflicted = token(centre.reviewers[2])
    ok(cli("conflict", str(first["id"]), "--reason", "co-author", token=conflicted))
    refused(cli(*review, token=conflicted), "co-author")

    for reviewer in centre.reviewers[:2]:
        out = ok(cli(*review, "--comment", "strong team", token=token(reviewer))).stdout
        assert "weighted score 80.00 of 100" in out
    refused(cli(*review[:-2], "--recommend", "approve", token=op), "Forbidden")
    assert len(as_json(cli("reviews", str(first["id"]), "--json", token=op))) == 2
    assert "strong team" in ok(cli("reviews", str(first["id"]), token=op)).stdout

    # approve: an allocation opens
    starts, ends = TODAY.isoformat(), (TODAY + timedelta(days=60)).isoformat()
    refused(cli("decide", str(first["id"]), "approve", token=op), "--gpu-hours")
    refused(cli("decide", str(first["id"]), "maybe", token=op), "approve or reject")
    out = ok(
        cli(
            "decide",
            str(first["id"]),
            "approve",
            "--gpu-hours",
            "400",
            "--starts",
            starts,
            "--ends",
            ends,
            "--rate",
            "0.85",
            "--rate-reason",
            "public-interest research",
            token=op,
        )
    ).stdout
    assert "approved: allocation" in out
    shown = as_json(cli("application", str(first["id"]), "--json", token=tok))
    assert shown["status"] == "approved"
    allocation_id = shown["decision"]["allocation_id"]
    assert "public-interest research" in ok(cli("application", str(first["id"]), token=op)).stdout
    alloc = as_json(cli("usage", str(allocation_id), "--json", token=tok))
    assert alloc["subsidy_rate"] == "0.85" and alloc["gpu_hours_granted"] == 400

    # reject: with reasons only
    refused(cli("decide", str(second), "reject", token=op), "--reasons")
    out = ok(cli("decide", str(second), "reject", "--reasons", "out of scope", token=op)).stdout
    assert "rejected" in out
    shown_text = ok(cli("application", str(second), token=tok)).stdout
    assert "rejected" in shown_text and "out of scope" in shown_text
    refused(cli("decide", str(second), "reject", "--reasons", "again", token=op), "already")


# -- jobs, money, the ledger -------------------------------------------------------------------


def test_job_runs_is_charged_and_the_ledger_verifies(
    cli: Cli, centre: Centre, token: Callable[[Actor], str], tmp_path: Path
) -> None:
    allocation = award(centre, "Harbour University", gpu_hours=100)
    org_id = centre.orgs["Harbour University"]
    tok = token(centre.applicants["Harbour University"])
    code = "import time; print('hello'); time.sleep(1.5)"
    job_id = submit(cli, tok, allocation, PY, "-c", code, gpus=4)
    job = wait_for_state(cli, tok, job_id, {"completed", "failed", "timeout", "cancelled"})
    assert job["state"] == "completed", job
    assert job["exit_code"] == 0
    assert ok(cli("logs", str(job_id), token=tok)).stdout == "hello\n"
    assert ok(cli("logs", str(job_id), "--stderr", token=tok)).stdout == ""
    assert ok(cli("logs", str(job_id), "--tail", "3", token=tok)).stdout == "lo\n"
    assert "completed" in ok(cli("job", str(job_id), token=tok)).stdout
    assert str(job_id) in ok(cli("jobs", "--state", "completed", token=tok)).stdout
    listed = as_json(cli("jobs", "--allocation", str(allocation), "--json", token=tok))
    assert [j["id"] for j in listed] == [job_id]

    usage = as_json(cli("usage", "--json", token=tok))
    assert usage[0]["gpu_hours_used"] > 0 and usage[0]["subsidy_spent_cents"] > 0
    assert "HK$" in ok(cli("usage", token=tok)).stdout

    # the invoice shows the co-pay, and the CSV agrees
    month = datetime.now(UTC).strftime("%Y-%m")
    inv = as_json(cli("invoice", str(org_id), month, "--json", token=tok))
    assert len(inv["lines"]) == 1
    assert inv["copay_cents"] == inv["charge_cents"] - inv["subsidy_cents"] > 0
    csv_file = tmp_path / "invoice.csv"
    out = ok(cli("invoice", str(org_id), month, "--csv", str(csv_file), token=tok)).stdout
    copay = f"HK${inv['copay_cents'] // 100:,}.{inv['copay_cents'] % 100:02d}"
    assert f"Co-pay due: {copay}" in out
    assert inv["number"] in out
    rows = csv_file.read_text().splitlines()
    assert rows[0].startswith("invoice,job_id") and rows[-1].split(",")[1] == "TOTAL"
    refused(cli("invoice", str(org_id), "2026-13", token=tok), "month")

    # the funder checks the fund and the ledger, live and offline
    funder = token(centre.funder)
    assert "yes" in ok(cli("fund", token=funder)).stdout
    fund = as_json(cli("fund", "--json", token=funder))
    assert fund[0]["spent_cents"] == inv["subsidy_cents"]
    out = ok(cli("ledger", "verify", token=funder)).stdout
    assert out.startswith("OK: ")
    refused(cli("ledger", "verify", token=tok), "Forbidden")

    export = tmp_path / "ledger.jsonl"
    refused(cli("ledger", "export", str(export), token=tok), "Forbidden")
    assert not export.exists()
    out = ok(cli("ledger", "export", str(export), token=funder)).stdout
    lines = export.read_text().splitlines()
    assert f"Exported {len(lines) - 2} transactions" in out

    offline = {"AISC_URL": None, "AISC_TOKEN": None, "AISC_CONFIG": str(tmp_path / "none.json")}
    out = ok(cli("ledger", "verify", "--file", str(export), **offline)).stdout
    assert out.startswith("OK: ") and f"{len(lines) - 2} transactions" in out
    # ... even with the server's address pointing nowhere
    dead = f"http://127.0.0.1:{free_port()}"
    ok(cli("ledger", "verify", "--file", str(export), AISC_URL=dead))

    # tamper with one amount: offline verification fails
    tampered = tmp_path / "tampered.jsonl"
    records = [json.loads(line) for line in lines]
    victim = next(r for r in records if r.get("kind") == "settle")
    victim["postings"][0]["amount"] += 100
    victim["postings"][1]["amount"] -= 100
    tampered.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = cli("ledger", "verify", "--file", str(tampered), **offline)
    refused(result, "does not verify", f"#{victim['seq']}")
    assert "altered" in result.stdout

    broken = tmp_path / "broken.jsonl"
    broken.write_text(lines[0] + "\n{not json\n")
    refused(cli("ledger", "verify", "--file", str(broken), **offline), "line 2")
    refused(cli("ledger", "verify", "--file", str(tmp_path / "missing.jsonl"), **offline))


def test_cancel_a_running_job(cli: Cli, centre: Centre, token: Callable[[Actor], str]) -> None:
    allocation = award(centre, "Harbour University")
    tok = token(centre.applicants["Harbour University"])
    job_id = submit(cli, tok, allocation, PY, "-c", "import time; time.sleep(60)")
    wait_for_state(cli, tok, job_id, {"running"})
    assert any(e["job"]["id"] == job_id for e in as_json(cli("queue", "--json", token=tok)))
    assert str(job_id) in ok(cli("queue", token=tok)).stdout
    assert "asked to stop" in ok(cli("cancel", str(job_id), token=tok)).stdout
    job = wait_for_state(cli, tok, job_id, {"cancelled", "completed", "failed", "timeout"})
    assert job["state"] == "cancelled"
    refused(cli("cancel", str(job_id), token=tok), "Conflict", "already ended")


def test_cancel_a_queued_job(cli: Cli, centre: Centre, token: Callable[[Actor], str]) -> None:
    allocation = award(centre, "Harbour University")
    tok = token(centre.applicants["Harbour University"])
    # 8 GPUs each: the third cannot start while two hold both nodes
    ids = [submit(cli, tok, allocation, PY, "-c", "import time; time.sleep(60)", gpus=8)]
    ids += [submit(cli, tok, allocation, PY, "-c", "import time; time.sleep(60)", gpus=8)]
    # no '--': everything after the program belongs to the job, options included
    third = cli(
        *("submit", "--allocation", str(allocation), "--gpus", "8", "--time-limit", "90"),
        *(PY, "-c", "print(1)", "--json"),
        token=tok,
    )
    assert "queued" in ok(third).stdout
    ids += [max(j["id"] for j in as_json(cli("jobs", "--json", token=tok)))]
    assert as_json(cli("job", str(ids[2]), "--json", token=tok))["argv"][1:] == [
        "-c",
        "print(1)",
        "--json",
    ]
    out = ok(cli("cancel", str(ids[2]), token=tok)).stdout
    assert out.strip() == f"Job {ids[2]} cancelled."
    for job_id in ids[:2]:
        ok(cli("cancel", str(job_id), token=tok))
    for job_id in ids[:2]:
        wait_for_state(cli, tok, job_id, {"cancelled", "completed", "failed"})


def test_submit_refusals(cli: Cli, centre: Centre, token: Callable[[Actor], str]) -> None:
    allocation = award(centre, "Harbour University", gpu_hours=10)
    tok = token(centre.applicants["Harbour University"])
    base = ["submit", "--allocation", str(allocation), "--gpus", "8"]
    refused(cli(*base, "--time-limit", "1d", "--", PY, "-c", "1", token=tok), "Over quota")
    line = refused(cli(*base, "--time-limit", "10x", "--", "true", token=tok), "--time-limit")
    assert "10x" in line
    refused(cli(*base, "--time-limit", "0", "--", "true", token=tok), "--time-limit")
    refused(cli(*base, "--time-limit", "1m", "--priority", "5", "--", "true", token=tok), "only")
    other = token(add_org(centre, "Elsewhere"))
    refused(cli(*base, "--time-limit", "1m", "--", "true", token=other), "Forbidden")
    assert as_json(cli("jobs", "--json", token=tok)) == []


def test_messages_with_brackets_are_printed_verbatim(
    cli: Cli, centre: Centre, token: Callable[[Actor], str]
) -> None:
    op = token(centre.operator)
    line = refused(cli("org", "create", "[bold]x[/bold]", "--category", "[red]", token=op))
    assert "'[red]'" in line


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_config_file_is_private_even_if_it_existed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aisc.cli.client import save_config

    path = tmp_path / "cli.json"
    path.write_text("{}")
    path.chmod(0o644)
    monkeypatch.setenv("AISC_CONFIG", str(path))
    save_config("http://x", "t")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
