"""`aisc slurm sync|show|import` on the database and the real cluster, as an operator runs them;
and the Slurm user name a member is created with, through `aisc admin` and the API."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner, Result

from aisc.backends.slurm import SlurmCli
from aisc.cli.main import app
from aisc.runtime import Runtime
from aisc.services.slurm_names import SlurmNames
from aisc.store.tables import Organisation, User
from tests.builders import award, build_centre
from tests.conftest import TokenFor, UowFactory

Aisc = Callable[..., Result]


@pytest.fixture
def aisc(database_url: str, tmp_path: Path) -> Aisc:
    """`aisc ARGS` with settings from AISC_* variables, on the test database."""

    def run(*args: str, **env: str) -> Result:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("AISC_")}
        environ.update(
            AISC_HOME=str(tmp_path / "home"), AISC_DATABASE_URL=database_url, COLUMNS="250"
        )
        environ.update(env)
        return CliRunner().invoke(app, list(args), env=environ)

    return run


@pytest.fixture
def slurm_aisc(
    aisc: Aisc, slurm_env: dict[str, str], slurm_names: SlurmNames, slurm: SlurmCli
) -> Aisc:
    """`aisc ARGS` pointed at the dev cluster, managing this test's prefix, submitting as root;
    through `slurm`, what it makes there is removed after the test."""

    def run(*args: str, **env: str) -> Result:
        settings = {
            "AISC_SLURM_CONF": slurm_env["SLURM_CONF"],
            "AISC_SLURM_CLUSTER": "aisc",
            "AISC_SLURM_PREFIX": slurm_names.prefix,
            "AISC_SLURM_USER": "root",
        }
        return aisc(*args, **{**settings, **env})

    return run


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return " ".join(result.stdout.split())


def rows(result: Result) -> list[str]:
    """stdout's lines with Rich's table borders gone and runs of spaces as one."""
    ok(result)
    lines = ["".join(" " if c in "│┃" else c for c in line) for line in result.stdout.splitlines()]
    return [" ".join(line.split()) for line in lines]


def refused(result: Result, *fragments: str) -> str:
    """Exit 1 with one line on stderr holding each fragment."""
    assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_sync_creates_then_reports_in_sync_and_corrects_drift(
    slurm_aisc: Aisc, slurm: SlurmCli, slurm_names: SlurmNames, uow_factory: UowFactory
) -> None:
    centre = build_centre(uow_factory)
    alloc = award(centre, "Lingnan Lab", gpu_hours=100)
    account, qos = slurm_names.allocation_account(alloc), slurm_names.allocation_qos(alloc)

    first = ok(slurm_aisc("slurm", "sync"))
    assert "created (4)" in first and f"qos {qos}" in first and f"user root in {account}" in first
    assert "in sync" in ok(slurm_aisc("slurm", "sync"))

    slurm.modify_qos(qos, grptresmins="gres/gpu=1")
    dry = ok(slurm_aisc("slurm", "sync", "--dry-run"))
    assert "Dry run" in dry and "drift to correct (1)" in dry
    assert f"qos {qos} GrpTRESMins: gres/gpu=1 -> gres/gpu=6000" in dry
    (limits,) = [q for q in slurm.qos() if q.name == qos]
    assert limits.grp_tres_mins == {"gres/gpu": 1}, "a dry run changes nothing"

    fixed = ok(slurm_aisc("slurm", "sync"))
    assert "drift corrected (1)" in fixed
    assert f"qos {qos} GrpTRESMins: gres/gpu=1 -> gres/gpu=6000" in fixed
    (limits,) = [q for q in slurm.qos() if q.name == qos]
    assert limits.grp_tres_mins == {"gres/gpu": 6000}


def test_show_lists_the_managed_accounts_with_their_limits_and_users(
    slurm_aisc: Aisc, slurm_names: SlurmNames, uow_factory: UowFactory
) -> None:
    assert "No Slurm accounts" in ok(slurm_aisc("slurm", "show"))
    centre = build_centre(uow_factory)
    alloc = award(centre, "Lingnan Lab", gpu_hours=100)
    ok(slurm_aisc("slurm", "sync"))

    shown = rows(slurm_aisc("slurm", "show"))

    org = slurm_names.org_account(centre.orgs["Lingnan Lab"])
    account = slurm_names.allocation_account(alloc)
    assert shown.index(f"{org} root 100") < shown.index(
        f"{account} {org} 100 NoDecay gres/gpu=6000 gres/gpu=6000 root"
    )


def test_import_prints_what_it_made_and_a_second_run_makes_nothing(
    slurm_aisc: Aisc,
    slurm: SlurmCli,
    slurm_env: dict[str, str],
    uow_factory: UowFactory,
) -> None:
    uow_factory()  # an empty database
    tag = f"imp{uuid.uuid4().hex[:6]}"
    user = f"{tag}u1"
    try:
        slurm.add_account(tag, "root", 1, f"Imp Institute {tag}", f"Imp Institute {tag}")
        slurm.add_account(f"{tag}p1", tag, 1, "vision", f"Imp Institute {tag}")
        subprocess.run(
            ["sacctmgr", "-i", "add", "user", user, f"account={tag}p1", "cluster=aisc"],
            env={**os.environ, **slurm_env},
            check=True,
            capture_output=True,
        )
        refused(slurm_aisc("slurm", "import", "--email-domain", "nowhere"), "not an email domain")
        refused(
            slurm_aisc("slurm", "import", "--email-domain", "imp.hk", "--category", "club"),
            "unknown category",
        )

        first = "\n".join(rows(slurm_aisc("slurm", "import", "--email-domain", "imp.hk")))

        assert f"imp institute {tag} {tag} created" in first
        assert f"{user} {user}@imp.hk imp institute {tag} created" in first
        assert f"{tag}p1 {tag} imp institute {tag} {user}" in first  # awaiting an award
        with uow_factory() as uow:
            org = uow.session.scalar(
                select(Organisation).where(Organisation.name == f"imp institute {tag}")
            )
            assert org is not None and org.category == "university"
            member = uow.session.scalar(select(User).where(User.slurm_user == user))
            assert member is not None and member.org_id == org.id

        again = "\n".join(rows(slurm_aisc("slurm", "import", "--email-domain", "imp.hk")))
        assert f"imp institute {tag} {tag} exists" in again
        assert f"{user} {user}@imp.hk imp institute {tag} exists" in again
    finally:
        slurm.remove_user(user, f"{tag}p1")
        for name in (f"{tag}p1", tag):
            slurm.delete_account(name)
            subprocess.run(
                ["sacctmgr", "-i", "delete", "account", f"name={name}"],
                env={**os.environ, **slurm_env},
                capture_output=True,
            )


def test_slurm_out_of_reach_or_a_bad_prefix_is_one_line_and_exit_1(
    slurm_aisc: Aisc, uow_factory: UowFactory
) -> None:
    uow_factory()
    refused(slurm_aisc("slurm", "sync", PATH="/nonexistent"), "Slurm is unavailable", "sacctmgr")
    refused(slurm_aisc("slurm", "show", PATH="/nonexistent"), "Slurm is unavailable")
    refused(slurm_aisc("slurm", "sync", AISC_SLURM_PREFIX="Aisc_"), "AISC_SLURM_PREFIX")
    refused(slurm_aisc("slurm", "sync", AISC_SLURM_USER="Not A User"), "Unix user name")


# -- Slurm user names of members ---------------------------------------------------------------


def test_admin_create_user_takes_a_slurm_user_name_and_refuses_a_bad_one(
    aisc: Aisc, uow_factory: UowFactory
) -> None:
    uow_factory()
    ok(aisc("admin", "create-user", "Olivia Tsang", "ops@centre.test", "--slurm-user", "otsang"))
    with uow_factory() as uow:
        user = uow.session.scalar(select(User).where(User.email == "ops@centre.test"))
        assert user is not None and user.slurm_user == "otsang"
    refused(
        aisc("admin", "create-user", "Ann", "ann@centre.test", "--slurm-user", "Ann.Lee"),
        "'Ann.Lee' is not a Unix user name",
    )
    refused(
        aisc("admin", "create-user", "Other", "o@centre.test", "--slurm-user", "otsang"),
        "Slurm user name otsang exists already",
    )
    with uow_factory() as uow:
        assert uow.session.scalar(select(User).where(User.email == "ann@centre.test")) is None


def test_the_api_creates_users_with_a_slurm_user_name(
    client: TestClient, auth: TokenFor, runtime: Runtime
) -> None:
    centre = build_centre(runtime.uow)
    headers = auth(centre.operator)
    body = {"name": "Ming", "email": "ming@centre.test", "role": "operator"}

    made = client.post("/api/v1/users", json={**body, "slurm_user": "ming"}, headers=headers)

    assert made.status_code == 201, made.text
    assert made.json()["slurm_user"] == "ming"
    listed = client.get("/api/v1/users", headers=headers).json()
    assert {u["email"]: u["slurm_user"] for u in listed}["ops@centre.test"] is None
    bad = client.post(
        "/api/v1/users",
        json={**body, "email": "m2@centre.test", "slurm_user": "9lives"},
        headers=headers,
    )
    assert bad.status_code == 422 and "Unix user name" in bad.json()["detail"]
    after = client.get("/api/v1/users", headers=headers).json()
    assert len(after) == len(listed), "a refused user is not created"
