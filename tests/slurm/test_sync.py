"""Awards into the real Slurm cluster: accounts, Fairshare, QOS limits and user associations,
idempotent and reconciling; hand-made drift undone; closed awards refused by Slurm itself; an
outage part-way finished by the next sync, a refused command reported while the rest run; and
the import of a hand-made account tree."""

from __future__ import annotations

import itertools
import os
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select

from aisc.backends.slurm import Association, Qos, SlurmCli, SlurmUnavailable, run_process
from aisc.domain.errors import PermissionDenied, ValidationError
from aisc.domain.money import split_charge
from aisc.ledger import accounts as acc
from aisc.ledger import operations as ops
from aisc.services import accounts, allocations
from aisc.services.context import utcnow
from aisc.services.slurm_names import SlurmNames
from aisc.services.slurm_sync import (
    Drift,
    SlurmObject,
    SyncReport,
    import_cluster,
    sync_allocations,
)
from aisc.store.tables import Allocation, LedgerHead, Organisation, User
from tests.builders import Centre, award, build_centre
from tests.conftest import UowFactory, reset_database

SERVICE_USER = "root"  # the dev cluster's admin, who may submit under any association
JOB_IDS = itertools.count(10_000)  # ledger references for jobs that exist only there


def sacctmgr(env: Mapping[str, str], *args: str, check: bool = True) -> str:
    """sacctmgr by hand, as an operator at the terminal would."""
    done = subprocess.run(
        ["sacctmgr", "-i", "-n", "-P", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def snapshot(env: Mapping[str, str], names: SlurmNames) -> list[str]:
    """Every line sacctmgr prints about this test's names: associations, accounts and QOS."""
    lines = []
    for what, fmt in (
        ("assoc", "Account,User,ParentName,Fairshare,QOS,DefaultQOS"),
        ("account", "Account,Descr,Org"),
        ("qos", "Name,Flags,GrpTRESMins,GrpTRESRunMins,GrpSubmitJobs,MaxWall"),
    ):
        out = sacctmgr(env, "show", what, f"format={fmt}")
        lines += [f"{what}|{line}" for line in out.splitlines() if line.startswith(names.prefix)]
    return sorted(lines)


def sbatch(
    env: Mapping[str, str], account: str, qos: str, *extra: str, minutes: int = 1
) -> subprocess.CompletedProcess[str]:
    """A trivial one-GPU job, submitted by hand under the account and QOS. Its name carries the
    account's prefix, so the `slurm` fixture cancels it if the test stops early."""
    return subprocess.run(
        [
            *("sbatch", "--parsable", *extra, "-A", account, "--qos", qos, "-J", f"{account}job"),
            *("--gres=gpu:1", "-t", str(minutes), "-o", "/dev/null", "--wrap", "sleep 300"),
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def hold_gpu_seconds(
    uow_factory: UowFactory, allocation_id: int, gpu_seconds: int, used: int | None = None
) -> None:
    """Reserve GPU-seconds in the ledger, as aisc does before `sbatch`; with `used`, also settle
    the job as having run that long."""
    with uow_factory() as uow:
        uow.ledger.lock()
        allocation = uow.session.get(Allocation, allocation_id)
        assert allocation is not None
        ref, s, a = allocations.ref_of(allocation), allocation.scheme_id, allocation.id
        balances = uow.ledger.balances([acc.gpu_available(s, a), acc.subsidy_committed(s, a)])
        job_id = next(JOB_IDS)
        uow.ledger.append(ops.reserve(ref, job_id, gpu_seconds, 0, balances))
        if used is not None:
            split = split_charge(used, allocation.rate_bp, 0)  # one cent a GPU-second
            uow.ledger.append(ops.settle(ref, job_id, gpu_seconds, 0, used, split))
        uow.commit()


def member(centre: Centre, org: str, slurm_user: str, active: bool = True) -> int:
    user = accounts.create_user(
        centre.uow(),
        centre.operator,
        f"Member {slurm_user}",
        f"{slurm_user}@{org.lower().replace(' ', '')}.test",
        "applicant",
        centre.orgs[org],
        slurm_user=slurm_user,
    )
    if not active:
        with centre.uow() as uow:
            row = uow.session.get(User, user.id)
            assert row is not None
            row.active = False
            uow.commit()
    return user.id


def sync(
    centre: Centre,
    slurm: SlurmCli,
    names: SlurmNames,
    now: datetime | None = None,
    dry_run: bool = False,
) -> SyncReport:
    return sync_allocations(
        centre.uow(), slurm, names, SERVICE_USER, now or utcnow(), dry_run=dry_run
    )


def mine(slurm: SlurmCli, names: SlurmNames) -> dict[tuple[str, str], Association]:
    return {(a.account, a.user): a for a in slurm.associations() if names.owns(a.account)}


def qos_of(slurm: SlurmCli, name: str) -> Qos:
    (found,) = [q for q in slurm.qos() if q.name == name]
    return found


def ledger_head(uow_factory: UowFactory) -> str:
    with uow_factory() as uow:
        head = uow.session.get(LedgerHead, 1)
        assert head is not None
        return head.hash


def test_an_award_becomes_accounts_a_budget_qos_and_associations(
    slurm: SlurmCli, slurm_names: SlurmNames, uow_factory: UowFactory, slurm_env: dict[str, str]
) -> None:
    centre = build_centre(uow_factory)
    alloc = award(centre, "Lingnan Lab", gpu_hours=100)
    alice = f"{slurm_names.prefix}alice"
    member(centre, "Lingnan Lab", alice)
    member(centre, "Lingnan Lab", f"{slurm_names.prefix}gone", active=False)
    hold_gpu_seconds(uow_factory, alloc, 2 * 1800, used=2 * 1800)  # a 2-GPU job ran 30 min
    hold_gpu_seconds(uow_factory, alloc, 4 * 3600)  # and a 4-GPU job of an hour is reserved
    head_before = ledger_head(uow_factory)

    report = sync(centre, slurm, slurm_names)

    org = slurm_names.org_account(centre.orgs["Lingnan Lab"])
    account, qos = slurm_names.allocation_account(alloc), slurm_names.allocation_qos(alloc)
    assert set(report.created) == {
        SlurmObject("account", org),
        SlurmObject("account", account),
        SlurmObject("qos", qos),
        SlurmObject("user", SERVICE_USER, account),
        SlurmObject("user", alice, account),
    }
    assert report.changed == () and report.removed == () and report.failed == ()
    found = mine(slurm, slurm_names)
    assert set(found) == {(org, ""), (account, ""), (account, SERVICE_USER), (account, alice)}
    assert (found[(org, "")].parent, found[(org, "")].fairshare) == ("root", "100")
    assert (found[(account, "")].parent, found[(account, "")].fairshare) == (org, "100")
    for user in (SERVICE_USER, alice):
        assert (found[(account, user)].qos, found[(account, user)].default_qos) == ((qos,), qos)
    limits = qos_of(slurm, qos)
    assert limits.flags == ("NoDecay",)
    assert limits.grp_tres_mins == {"gres/gpu": 100 * 60}
    # less what was used; what a job holds is still Slurm's to run (it counts it when it starts)
    assert limits.grp_tres_run_mins == {"gres/gpu": 100 * 60 - 60}
    assert limits.grp_submit_jobs is None
    texts = {a.name: (a.description, a.organization) for a in slurm.accounts()}
    assert texts[org] == ("lingnan lab", "lingnan lab")  # Slurm lowers them
    assert ledger_head(uow_factory) == head_before, "a sync writes nothing to aisc's database"
    # Slurm takes a job under the award (held, so it never runs)
    taken = sbatch(slurm_env, account, qos, "-H")
    assert taken.returncode == 0, taken.stderr
    slurm.cancel(int(taken.stdout.strip().split(";")[0]))


def test_a_second_sync_changes_nothing(
    slurm: SlurmCli, slurm_names: SlurmNames, uow_factory: UowFactory, slurm_env: dict[str, str]
) -> None:
    centre = build_centre(uow_factory)
    award(centre, "Lingnan Lab", gpu_hours=100)
    award(centre, "Lingnan Lab", gpu_hours=40)
    award(centre, "Polytechnic", gpu_hours=7)
    member(centre, "Polytechnic", f"{slurm_names.prefix}bob")
    first = sync(centre, slurm, slurm_names)
    assert len(first.created) == 2 + 3 + 3 + 4  # org accounts, accounts, QOS, associations
    before = snapshot(slurm_env, slurm_names)
    assert len(before) > 10

    again = sync(centre, slurm, slurm_names)

    assert again.in_sync and again.commands == () and str(again) == "in sync"
    assert snapshot(slurm_env, slurm_names) == before
    # two-level fair share: an organisation weighs what its awards weigh together
    found = mine(slurm, slurm_names)
    lingnan = slurm_names.org_account(centre.orgs["Lingnan Lab"])
    assert found[(lingnan, "")].fairshare == "140"


def test_drift_made_by_hand_is_reported_and_corrected(
    slurm: SlurmCli, slurm_names: SlurmNames, uow_factory: UowFactory, slurm_env: dict[str, str]
) -> None:
    centre = build_centre(uow_factory)
    alloc = award(centre, "Lingnan Lab", gpu_hours=100)
    alice = f"{slurm_names.prefix}alice"
    member(centre, "Lingnan Lab", alice)
    sync(centre, slurm, slurm_names)
    synced = snapshot(slurm_env, slurm_names)
    account, qos = slurm_names.allocation_account(alloc), slurm_names.allocation_qos(alloc)
    sacctmgr(slurm_env, "modify", "qos", "where", f"name={qos}", "set", "GrpTRESMins=gres/gpu=1")
    sacctmgr(slurm_env, "modify", "qos", "where", f"name={qos}", "set", "GrpSubmitJobs=5")
    sacctmgr(slurm_env, "delete", "user", "where", f"name={alice}", f"account={account}")
    sacctmgr(
        slurm_env, "modify", "account", "where", f"name={account}", "cluster=aisc", "set",
        "fairshare=7",
    )  # fmt: skip
    sacctmgr(
        slurm_env, "modify", "user", "where", f"name={SERVICE_USER}", f"account={account}",
        "cluster=aisc", "set", "qos=normal", "defaultqos=normal",
    )  # fmt: skip
    assert snapshot(slurm_env, slurm_names) != synced

    dry = sync(centre, slurm, slurm_names, dry_run=True)
    report = sync(centre, slurm, slurm_names)

    assert dry.dry_run and (dry.created, dry.changed) == (report.created, report.changed)
    q, a = SlurmObject("qos", qos), SlurmObject("account", account)
    service = SlurmObject("user", SERVICE_USER, account)
    assert set(report.changed) == {
        Drift(q, "GrpTRESMins", "gres/gpu=1", "gres/gpu=6000"),
        Drift(q, "GrpSubmitJobs", "5", ""),
        Drift(a, "Fairshare", "7", "100"),
        Drift(service, "QOS", "normal", qos),
        Drift(service, "DefaultQOS", "normal", qos),
    }
    assert f"drift qos {qos} GrpTRESMins: gres/gpu=1 -> gres/gpu=6000" in report.lines()
    assert report.created == (SlurmObject("user", alice, account),)
    assert report.removed == ()
    assert snapshot(slurm_env, slurm_names) == synced
    assert sync(centre, slurm, slurm_names).in_sync


def test_closed_expired_or_spent_awards_take_no_new_jobs(
    slurm: SlurmCli, slurm_names: SlurmNames, uow_factory: UowFactory, slurm_env: dict[str, str]
) -> None:
    centre = build_centre(uow_factory)
    closed = award(centre, "Lingnan Lab", gpu_hours=10)
    running = award(centre, "Polytechnic", gpu_hours=10)
    spent = award(centre, "Baptist", gpu_hours=1)
    allocations.close_allocation(centre.uow(), centre.operator, closed)
    hold_gpu_seconds(uow_factory, spent, 3600, used=3600)  # all of it, used by one job
    sync(centre, slurm, slurm_names)

    for alloc in (closed, spent):
        name = slurm_names.allocation_qos(alloc)
        limits = qos_of(slurm, name)
        assert limits.grp_submit_jobs == 0
        assert limits.grp_tres_run_mins == {"gres/gpu": 0}
        refused = sbatch(slurm_env, slurm_names.allocation_account(alloc), name)
        assert refused.returncode != 0
        assert "QOSGrpSubmitJobsLimit" in refused.stderr, refused.stderr
    open_qos = slurm_names.allocation_qos(running)
    assert qos_of(slurm, open_qos).grp_submit_jobs is None

    # the day after the award ends: the same sync, later, closes Slurm to it too
    with uow_factory() as uow:
        row = uow.session.get(Allocation, running)
        assert row is not None
        ends_at = row.ends_at
    later = sync(centre, slurm, slurm_names, now=ends_at + timedelta(days=1))
    assert later.changed == (Drift(SlurmObject("qos", open_qos), "GrpSubmitJobs", "", "0"),)
    refused = sbatch(slurm_env, slurm_names.allocation_account(running), open_qos)
    assert refused.returncode != 0 and "QOSGrpSubmitJobsLimit" in refused.stderr
    # and back open when the clock says so (an award extended, say)
    reopened = sync(centre, slurm, slurm_names)
    assert reopened.changed == (Drift(SlurmObject("qos", open_qos), "GrpSubmitJobs", "0", ""),)


def test_what_no_award_stands_for_is_removed(
    slurm: SlurmCli,
    slurm_names: SlurmNames,
    uow_factory: UowFactory,
    slurm_env: dict[str, str],
    engine: Engine,
) -> None:
    centre = build_centre(uow_factory)
    alloc = award(centre, "Lingnan Lab", gpu_hours=100)
    sync(centre, slurm, slurm_names)
    kept = snapshot(slurm_env, slurm_names)
    # leftovers under the prefix: an allocation aisc no longer has, with a user
    org, stray = slurm_names.org_account(77), slurm_names.allocation_account(78)
    slurm.add_qos(stray, flags="NoDecay")
    slurm.add_account(org, "root", 1, "old", "old")
    slurm.add_account(stray, org, 5, "old", "old")
    slurm.add_user(SERVICE_USER, stray, stray)
    # and a user association aisc did not make, in an account it keeps
    account = slurm_names.allocation_account(alloc)
    intruder = f"{slurm_names.prefix}eve"
    slurm.add_user(intruder, account, slurm_names.allocation_qos(alloc))

    report = sync(centre, slurm, slurm_names)

    assert report.created == () and report.changed == ()
    assert list(report.removed) == [
        SlurmObject("user", intruder, account),
        SlurmObject("user", SERVICE_USER, stray),
        SlurmObject("account", stray),  # the child before its parent
        SlurmObject("account", org),
        SlurmObject("qos", stray),
    ]
    # deleting an account's association leaves its account record behind (a Slurm quirk)
    lingering = {f"account|{org}|old|old", f"account|{stray}|old|old"}
    assert [line for line in snapshot(slurm_env, slurm_names) if line not in lingering] == kept

    # no allocations at all: everything under the prefix goes
    reset_database(engine)
    emptied = sync_allocations(centre.uow(), slurm, slurm_names, SERVICE_USER, utcnow())
    assert {o.kind for o in emptied.removed} == {"user", "account", "qos"}
    assert mine(slurm, slurm_names) == {}
    assert [q for q in slurm.qos() if slurm_names.owns(q.name)] == []


def test_an_outage_part_way_is_finished_by_the_next_sync(
    slurm: SlurmCli, slurm_names: SlurmNames, uow_factory: UowFactory, slurm_env: dict[str, str]
) -> None:
    centre = build_centre(uow_factory)
    award(centre, "Lingnan Lab", gpu_hours=100)
    award(centre, "Polytechnic", gpu_hours=50)
    writes: list[Sequence[str]] = []
    writes_allowed = 3

    def flaky(
        argv: Sequence[str], env: Mapping[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """Slurm's commands, until slurmdbd goes away after the third change."""
        if {"add", "modify", "delete"} & set(argv):
            if len(writes) == writes_allowed:
                return subprocess.CompletedProcess(
                    list(argv),
                    1,
                    "",
                    "sacctmgr: error: slurm_persist_conn_open_without_init: failed to open "
                    "persistent connection to host:localhost:6819: Connection refused",
                )
            writes.append(argv)
        return run_process(argv, env, timeout)

    broken = SlurmCli("aisc", conf=slurm_env.get("SLURM_CONF"), runner=flaky)
    with pytest.raises(SlurmUnavailable, match="Connection refused"):
        sync_allocations(centre.uow(), broken, slurm_names, SERVICE_USER, utcnow())
    part = snapshot(slurm_env, slurm_names)
    assert part, "the first commands reached Slurm"

    report = sync(centre, slurm, slurm_names)

    assert report.created and report.failed == ()
    assert len(report.commands) == 2 + 2 + 2 + 2 - writes_allowed
    assert sync(centre, slurm, slurm_names).in_sync
    found = mine(slurm, slurm_names)
    assert len([k for k in found if k[1] == ""]) == 4 and len([k for k in found if k[1]]) == 2


def test_import_makes_organisations_and_members_once(
    slurm: SlurmCli, slurm_names: SlurmNames, uow_factory: UowFactory, slurm_env: dict[str, str]
) -> None:
    tag = f"imp{uuid.uuid4().hex[:6]}"
    top, project = tag, f"{tag}p1"
    u1, u2, bad = f"{tag}u1", f"{tag}u2", f"{tag}.dot"
    centre = build_centre(uow_factory)
    aisc_owned = slurm_names.org_account(1)
    try:
        slurm.add_account(top, "root", 10, f"Imp University {tag}", f"Imp University {tag}")
        slurm.add_account(project, top, 5, "Speech project", f"Imp University {tag}")
        slurm.add_account(aisc_owned, "root", 1, "aisc made this", "aisc made this")
        sacctmgr(slurm_env, "add", "user", u1, f"account={top}", "cluster=aisc")
        sacctmgr(slurm_env, "add", "user", u2, f"account={project}", "cluster=aisc")
        sacctmgr(slurm_env, "add", "user", bad, f"account={project}", "cluster=aisc")
        sacctmgr(
            slurm_env,
            "add",
            "user",
            f"{slurm_names.prefix}x",
            f"account={aisc_owned}",
            "cluster=aisc",
        )
        before = snapshot_all(slurm_env, tag)

        with pytest.raises(ValidationError, match="email domain"):
            import_cluster(
                centre.uow(), centre.operator, slurm, "not a domain", "university", slurm_names
            )
        with pytest.raises(ValidationError, match="category"):
            import_cluster(centre.uow(), centre.operator, slurm, "imp.edu.hk", "club", slurm_names)
        with pytest.raises(PermissionDenied):
            import_cluster(
                centre.uow(), centre.funder, slurm, "imp.edu.hk", "university", slurm_names
            )
        with uow_factory() as uow:
            assert uow.session.scalar(select(func.count()).select_from(Organisation)) == 0

        report = import_cluster(
            centre.uow(), centre.operator, slurm, "Imp.EDU.hk", "research_institute", slurm_names
        )

        name = f"imp university {tag}"
        (org,) = [o for o in report.organisations if o.accounts == (top,)]
        assert (org.name, org.created) == (name, True)
        assert not any(aisc_owned in o.accounts for o in report.organisations)
        users = {u.slurm_user: u for u in report.users}
        assert set(users) >= {u1, u2} and bad not in users
        assert f"{slurm_names.prefix}x" not in users and "root" not in users
        assert users[u2].email == f"{u2}@imp.edu.hk" and users[u2].organisation == name
        assert any(bad in note for note in report.skipped)
        (waiting,) = [p for p in report.projects if p.account == project]
        assert (waiting.parent, waiting.organisation) == (top, name)
        assert waiting.users == tuple(sorted([u2, bad]))
        with uow_factory() as uow:
            row = uow.session.scalar(select(Organisation).where(Organisation.name == name))
            assert row is not None and row.category == "research_institute"
            people = uow.session.scalars(select(User).where(User.org_id == row.id)).all()
            assert sorted((p.slurm_user, p.role, p.email) for p in people) == [
                (u1, "applicant", f"{u1}@imp.edu.hk"),
                (u2, "applicant", f"{u2}@imp.edu.hk"),
            ]
        assert snapshot_all(slurm_env, tag) == before, "import changes nothing in Slurm"

        again = import_cluster(
            centre.uow(), centre.operator, slurm, "imp.edu.hk", "university", slurm_names
        )
        mine_again = [o for o in again.organisations if o.accounts == (top,)]
        assert [(o.org_id, o.created) for o in mine_again] == [(org.org_id, False)]
        assert {
            u.slurm_user: (u.user_id, u.created) for u in again.users if u.slurm_user in (u1, u2)
        } == {
            u1: (users[u1].user_id, False),
            u2: (users[u2].user_id, False),
        }
    finally:
        for user, account in ((u1, top), (u2, project), (bad, project)):
            slurm.remove_user(user, account)
        for account in (project, top):
            slurm.delete_account(account)
        for account in (project, top):
            # delete_account leaves the account record behind; remove it, it is ours
            sacctmgr(slurm_env, "delete", "account", "where", f"name={account}", check=False)


def snapshot_all(env: Mapping[str, str], tag: str) -> list[str]:
    out = sacctmgr(env, "show", "assoc", "format=Account,User,ParentName,Fairshare,QOS")
    out += sacctmgr(env, "show", "account", "format=Account,Descr,Org")
    return sorted(line for line in out.splitlines() if tag in line)


def test_a_refused_command_is_reported_and_the_rest_still_run(
    slurm: SlurmCli, slurm_names: SlurmNames, uow_factory: UowFactory, slurm_env: dict[str, str]
) -> None:
    centre = build_centre(uow_factory)
    alloc = award(centre, "Lingnan Lab", gpu_hours=100)
    alice = f"{slurm_names.prefix}alice"
    member(centre, "Lingnan Lab", alice)

    def refusing(
        argv: Sequence[str], env: Mapping[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """Slurm's commands, except that adding alice is refused."""
        if "add" in argv and alice in argv:
            return subprocess.CompletedProcess(
                list(argv), 1, "", "sacctmgr: error: Invalid user id"
            )
        return run_process(argv, env, timeout)

    picky = SlurmCli("aisc", conf=slurm_env.get("SLURM_CONF"), runner=refusing)
    report = sync_allocations(centre.uow(), picky, slurm_names, SERVICE_USER, utcnow())

    account = slurm_names.allocation_account(alloc)
    assert len(report.failed) == 1 and "Invalid user id" in report.failed[0]
    assert report.failed[0].startswith(f"add_user {alice} {account}")
    assert SlurmObject("user", alice, account) not in report.created
    assert SlurmObject("user", SERVICE_USER, account) in report.created
    assert not report.in_sync
    assert (account, alice) not in mine(slurm, slurm_names)

    healed = sync(centre, slurm, slurm_names)
    assert healed.created == (SlurmObject("user", alice, account),)
    assert (account, alice) in mine(slurm, slurm_names)


def wait_in_queue(slurm: SlurmCli, job_id: int, until: str, timeout: float = 30) -> str:
    """Poll squeue until the job runs (until="RUNNING") or waits for `until`; its state."""
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        (job,) = [j for j in slurm.queue() if j.job_id == job_id]
        seen = job.state if job.state == "RUNNING" else job.reason
        if seen == until:
            return seen
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} is {seen!r} after {timeout} s, not {until!r}")


def test_a_job_holding_the_whole_budget_in_the_ledger_still_starts_in_slurm(
    slurm: SlurmCli, slurm_names: SlurmNames, uow_factory: UowFactory, slurm_env: dict[str, str]
) -> None:
    centre = build_centre(uow_factory)
    alloc = award(centre, "Lingnan Lab", gpu_hours=1)
    hold_gpu_seconds(uow_factory, alloc, 3600)  # aisc reserves all 60 GPU-minutes, then sbatch
    sync(centre, slurm, slurm_names)
    account, qos = slurm_names.allocation_account(alloc), slurm_names.allocation_qos(alloc)
    limits = qos_of(slurm, qos)
    assert (limits.grp_tres_run_mins, limits.grp_submit_jobs) == ({"gres/gpu": 60}, None)
    # as a run limit, the ledger's available balance (granted - used - reserved = 0) would hold
    # the very job the reservation is for
    slurm.modify_qos(qos, grptresrunmins="gres/gpu=0")
    submitted = sbatch(slurm_env, account, qos, minutes=60)
    assert submitted.returncode == 0, submitted.stderr
    job_id = int(submitted.stdout.strip().split(";")[0])
    try:
        wait_in_queue(slurm, job_id, "QOSGrpGRESRunMinutes")

        report = sync(centre, slurm, slurm_names)

        assert report.changed == (
            Drift(SlurmObject("qos", qos), "GrpTRESRunMins", "gres/gpu=0", "gres/gpu=60"),
        )
        wait_in_queue(slurm, job_id, "RUNNING")
    finally:
        slurm.cancel(job_id)
