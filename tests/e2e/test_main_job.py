"""The main job and the set-up commands, run as a user would run them."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from aisc.api.app import create_app
from aisc.cli.main import app

AISC = [sys.executable, "-m", "aisc.cli.main"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AISC_")}
    env.update(extra)
    return env


def test_demo_runs_the_whole_path_and_its_ledger_verifies(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    result = subprocess.run(
        [*AISC, "demo", "--no-serve", "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=180,
        env=clean_env(COLUMNS="200"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "ledger verification: OK" in out
    assert "refused: Dr Carmen Lau" in out and "own organisation" in out
    assert "rejected" in out and "GPU-hours left" in out  # the over-quota refusal
    for state in ("completed", "failed", "timeout", "cancelled"):
        assert state in out
    db = sqlite3.connect(home / "aisc.db")
    states = dict(db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
    assert sum(states.values()) >= 12
    assert states["completed"] >= 8 and states["timeout"] == 1 and states["cancelled"] == 1
    assert states["failed"] == 2  # one crashed, one could not start
    charged, split_ok = db.execute(
        "SELECT count(*), sum(charge_cents = subsidy_cents + copay_cents) FROM job_charges"
    ).fetchone()
    assert charged == split_ok == sum(states.values()) - 1  # all but the one that never started
    tokens = json.loads((home / "demo-tokens.json").read_text())
    assert len(tokens) == 9 and all(t.startswith("aisc_") for t in tokens.values())


def test_db_upgrade_creates_the_schema_and_admin_bootstraps_an_operator(tmp_path: Path) -> None:
    runner = CliRunner()
    env = clean_env(AISC_HOME=str(tmp_path / "home"))
    upgraded = runner.invoke(app, ["db", "upgrade"], env=env)
    assert upgraded.exit_code == 0, upgraded.output
    assert "0005" in upgraded.stdout
    current = runner.invoke(app, ["db", "current"], env=env)
    assert current.stdout.strip() == "0005"
    created = runner.invoke(
        app,
        ["admin", "create-user", "Olivia Tsang", "ops@centre.test", "--role", "operator"],
        env=env,
    )
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("aisc_")
    again = runner.invoke(app, ["admin", "create-user", "Someone", "ops@centre.test"], env=env)
    assert again.exit_code == 1
    assert "exists already" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    issued = runner.invoke(app, ["admin", "issue-token", "ops@centre.test"], env=env)
    assert issued.exit_code == 0 and issued.stdout.strip().startswith("aisc_")
    missing = runner.invoke(app, ["admin", "issue-token", "nobody@centre.test"], env=env)
    assert missing.exit_code == 1 and "no user" in missing.stderr
    short = runner.invoke(
        app, ["admin", "set-password", "ops@centre.test"], env={**env, "AISC_NEW_PASSWORD": "short"}
    )
    assert short.exit_code == 1 and "at least 10 characters" in short.stderr
    assert len(short.stderr.strip().splitlines()) == 1
    nobody = runner.invoke(
        app,
        ["admin", "set-password", "nobody@centre.test"],
        env={**env, "AISC_NEW_PASSWORD": "long enough password"},
    )
    assert nobody.exit_code == 1 and "no user" in nobody.stderr
    set_password = runner.invoke(
        app, ["admin", "set-password", "ops@centre.test"], input="a portal password\n" * 2, env=env
    )
    assert set_password.exit_code == 0, set_password.output
    assert "password set for ops@centre.test" in set_password.stdout
    from aisc.config import Settings
    from aisc.runtime import Runtime
    from aisc.web.session import COOKIE

    runtime = Runtime.build(Settings(home=tmp_path / "home", detect_gpus=False), migrate=False)
    try:
        with TestClient(create_app(runtime, run_controller=False)) as client:
            signed = client.post(
                "/login",
                data={"email": "ops@centre.test", "password": "a portal password"},
                follow_redirects=False,
            )
            assert signed.status_code == 303 and signed.headers["location"] == "/ops"
            assert COOKIE in signed.cookies
    finally:
        runtime.close()


def test_serve_refuses_a_bad_inventory_with_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    env = clean_env(AISC_HOME=str(tmp_path / "home"), AISC_INVENTORY="x8", AISC_DETECT_GPUS="0")
    result = runner.invoke(app, ["serve", "--port", "1"], env=env)
    assert result.exit_code == 1
    assert "x8" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_serve_refuses_a_bad_policy_setting_with_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    env = clean_env(AISC_HOME=str(tmp_path / "home"), AISC_PRIORITY_WEIGHTS="age=lots")
    result = runner.invoke(app, ["serve", "--port", "1"], env=env)
    assert result.exit_code == 1
    assert "age=lots" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "home" / "aisc.db").exists(), "nothing is created on bad settings"
