"""The sync's pure parts: what aisc wants from its awards, and the commands that get Slurm there
from what it has. The same code runs against the real cluster in tests/slurm/test_sync.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aisc.backends.slurm import Account, Association, Qos
from aisc.services.slurm_names import SlurmNames
from aisc.services.slurm_sync import (
    AwardTerms,
    Command,
    Current,
    Drift,
    SlurmObject,
    Step,
    SyncReport,
    Wanted,
    WantedAccount,
    WantedQos,
    WantedUser,
    organisation_name,
    plan_sync,
    slurm_text,
    wanted_state,
)

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
NAMES = SlurmNames("t_")


def terms(allocation_id: int = 3, org_id: int = 1, **overrides: object) -> AwardTerms:
    fields: dict[str, object] = {
        "allocation_id": allocation_id,
        "name": "Cantonese ASR",
        "org_id": org_id,
        "org_name": "HKU Speech Lab",
        "gpu_hours": 100,
        "status": "active",
        "starts_at": NOW - timedelta(days=10),
        "ends_at": NOW + timedelta(days=80),
        "available_gpu_seconds": 100 * 3600,
        "reserved_gpu_seconds": 0,
        "members": (),
    }
    fields.update(overrides)
    return AwardTerms(**fields)  # type: ignore[arg-type]


def slurm_has(wanted: Wanted) -> Current:
    """Slurm holding exactly what is wanted, as SlurmCli reads it back."""
    assocs = [
        Association(a.name, "", a.parent, str(a.fairshare), ("normal",), "")
        for a in wanted.accounts
    ]
    assocs += [Association(u.account, u.user, "", "1", (u.qos,), u.qos) for u in wanted.users]
    return Current(
        associations=tuple(assocs),
        accounts=tuple(Account(a.name, a.description, a.organization) for a in wanted.accounts),
        qos=tuple(
            Qos(
                q.name,
                ("NoDecay",),
                {"gres/gpu": q.gpu_minutes},
                {"gres/gpu": q.run_minutes},
                0 if q.blocked else None,
            )
            for q in wanted.qos
        ),
    )


# -- what aisc wants ---------------------------------------------------------------------------


def test_an_award_wants_an_org_account_a_weighted_child_a_budget_qos_and_its_users() -> None:
    wanted = wanted_state(
        [terms(members=("alice", "aisc", "bob"), available_gpu_seconds=5999 * 60 + 59)],
        NAMES,
        "aisc",
        NOW,
    )
    assert wanted.accounts == (
        WantedAccount("t_o1", "root", 100, "hku speech lab", "hku speech lab"),
        WantedAccount("t_a3", "t_o1", 100, "cantonese asr", "hku speech lab"),
    )
    # run minutes round down: never more than the ledger holds
    assert wanted.qos == (WantedQos("t_a3", 6000, 5999, blocked=False),)
    assert wanted.users == tuple(WantedUser(u, "t_a3", "t_a3") for u in ("aisc", "alice", "bob"))


def test_shares_follow_the_awards_and_an_organisation_weighs_its_awards_together() -> None:
    wanted = wanted_state(
        [
            terms(1, org_id=1, gpu_hours=300),
            terms(2, org_id=2, gpu_hours=0, org_name="PolyU"),
            terms(4, org_id=1, gpu_hours=50),
        ],
        NAMES,
        "aisc",
        NOW,
    )
    shares = {a.name: (a.parent, a.fairshare) for a in wanted.accounts}
    assert shares == {
        "t_o1": ("root", 350),
        "t_o2": ("root", 1),  # at least 1: Slurm reads 0 as "no share at all"
        "t_a1": ("t_o1", 300),
        "t_a2": ("t_o2", 1),
        "t_a4": ("t_o1", 50),
    }
    # parents come before their children, so they can be created in this order
    assert [a.name for a in wanted.accounts][:2] == ["t_o1", "t_o2"]


@pytest.mark.parametrize(
    ("overrides", "blocked"),
    [
        ({}, False),
        ({"status": "closed"}, True),
        ({"ends_at": NOW}, True),  # the end is exclusive
        ({"ends_at": NOW + timedelta(seconds=1)}, False),
        ({"starts_at": NOW + timedelta(seconds=1)}, True),
        ({"available_gpu_seconds": 59}, True),  # less than one GPU-minute left
        ({"available_gpu_seconds": 60}, False),
        ({"available_gpu_seconds": -5}, True),
    ],
)
def test_slurm_takes_new_jobs_only_while_the_award_is_open(
    overrides: dict[str, object], blocked: bool
) -> None:
    (qos,) = wanted_state([terms(**overrides)], NAMES, "aisc", NOW).qos
    assert qos.blocked is blocked
    assert qos.run_minutes >= 0


def test_time_held_by_aisc_jobs_stays_runnable_in_slurm_and_only_use_takes_it_away() -> None:
    # aisc reserves before sbatch, and Slurm counts a starting job's minutes itself: subtracting
    # the reservation as well would hold the job back by its own reservation
    held = wanted_state(
        [terms(available_gpu_seconds=0, reserved_gpu_seconds=3600)], NAMES, "aisc", NOW
    )
    assert held.qos == (WantedQos("t_a3", 6000, 60, blocked=False),)
    used_up = wanted_state([terms(available_gpu_seconds=0)], NAMES, "aisc", NOW)
    assert used_up.qos == (WantedQos("t_a3", 6000, 0, blocked=True),)
    partly = wanted_state(
        [terms(available_gpu_seconds=90 * 60 + 59, reserved_gpu_seconds=30 * 60)],
        NAMES,
        "aisc",
        NOW,
    )
    assert partly.qos[0].run_minutes == 120


def test_slurm_text_is_what_sacctmgr_stores() -> None:
    # sanitised as the client sends it, then lowered by C's tolower: ASCII letters only
    assert slurm_text("HKU Speech Lab") == "hku speech lab"
    assert slurm_text("Université de HK, 香港") == "université de hk_ 香港"
    assert slurm_text("'; drop") == "__ drop"


# -- the plan ----------------------------------------------------------------------------------


def test_from_nothing_the_plan_creates_qos_then_parents_then_children_then_users() -> None:
    wanted = wanted_state([terms(members=("alice",), status="closed")], NAMES, "aisc", NOW)
    steps = plan_sync(wanted, Current((), (), ()))
    assert [s.command for s in steps] == [
        Command(
            "add_qos",
            ("t_a3",),
            (
                ("flags", "NoDecay"),
                ("grptresmins", "gres/gpu=6000"),
                ("grptresrunmins", "gres/gpu=6000"),
                ("grpsubmitjobs", "0"),
            ),
        ),
        Command("add_account", ("t_o1", "root", 100, "hku speech lab", "hku speech lab")),
        Command("add_account", ("t_a3", "t_o1", 100, "cantonese asr", "hku speech lab")),
        Command("add_user", ("aisc", "t_a3", "t_a3")),
        Command("add_user", ("alice", "t_a3", "t_a3")),
    ]
    report = SyncReport.of(steps)
    assert report.created == (
        SlurmObject("qos", "t_a3"),
        SlurmObject("account", "t_o1"),
        SlurmObject("account", "t_a3"),
        SlurmObject("user", "aisc", "t_a3"),
        SlurmObject("user", "alice", "t_a3"),
    )
    assert not report.in_sync and report.changed == () and report.removed == ()


def test_when_slurm_holds_what_is_wanted_the_plan_is_empty() -> None:
    wanted = wanted_state(
        [terms(1, members=("bob",)), terms(2, status="closed")], NAMES, "aisc", NOW
    )
    assert plan_sync(wanted, slurm_has(wanted)) == []
    assert SyncReport.of([]).in_sync and str(SyncReport.of([])) == "in sync"


def test_qos_drift_is_one_command_naming_each_field() -> None:
    wanted = wanted_state([terms(available_gpu_seconds=0)], NAMES, "aisc", NOW)
    current = slurm_has(wanted)
    drifted = Qos("t_a3", ("DenyOnLimit", "NoDecay"), {"gres/gpu": 1, "cpu": 5}, {}, None)
    current = Current(current.associations, current.accounts, (drifted,))
    (step,) = plan_sync(wanted, current)
    assert step.command == Command(
        "modify_qos",
        ("t_a3",),
        (
            ("flags", "NoDecay"),
            ("grptresmins", "gres/gpu=6000,cpu=-1"),  # a hand-added cpu limit is cleared
            ("grptresrunmins", "gres/gpu=0"),
            ("grpsubmitjobs", "0"),
        ),
    )
    q = SlurmObject("qos", "t_a3")
    assert step.changed == (
        Drift(q, "Flags", "DenyOnLimit,NoDecay", "NoDecay"),
        Drift(q, "GrpTRESMins", "cpu=5,gres/gpu=1", "gres/gpu=6000"),
        Drift(q, "GrpTRESRunMins", "", "gres/gpu=0"),
        Drift(q, "GrpSubmitJobs", "", "0"),
    )
    assert str(step.changed[1]) == "qos t_a3 GrpTRESMins: cpu=5,gres/gpu=1 -> gres/gpu=6000"
    assert str(step.changed[2]) == "qos t_a3 GrpTRESRunMins: none -> gres/gpu=0"


def test_a_blocked_qos_reopens_with_minus_one() -> None:
    wanted = wanted_state([terms()], NAMES, "aisc", NOW)
    current = slurm_has(wanted)
    (qos,) = current.qos
    blocked = Qos(qos.name, qos.flags, qos.grp_tres_mins, qos.grp_tres_run_mins, 0)
    (step,) = plan_sync(wanted, Current(current.associations, current.accounts, (blocked,)))
    assert step.command == Command("modify_qos", ("t_a3",), (("grpsubmitjobs", "-1"),))
    assert [str(d) for d in step.changed] == ["qos t_a3 GrpSubmitJobs: 0 -> none"]


def test_account_and_user_drift() -> None:
    wanted = wanted_state([terms(members=("alice",))], NAMES, "aisc", NOW)
    current = slurm_has(wanted)
    assocs = [
        Association("t_a3", "", "t_o9", "parent", ("normal",), "")
        if a.account == "t_a3" and not a.user
        else Association("t_a3", "alice", "", "1", ("normal", "t_a3"), "normal")
        if a.user == "alice"
        else a
        for a in current.associations
    ]
    records = tuple(
        Account(a.name, "renamed", a.organization) if a.name == "t_o1" else a
        for a in current.accounts
    )
    steps = plan_sync(wanted, Current(tuple(assocs), records, current.qos))
    assert [s.command for s in steps] == [
        Command("modify_account", ("t_o1",), (("description", "hku speech lab"),)),
        Command("modify_account", ("t_a3",), (("parent", "t_o1"), ("fairshare", "100"))),
        Command("modify_user", ("alice", "t_a3"), (("qos", "t_a3"), ("defaultqos", "t_a3"))),
    ]
    assert [str(d) for s in steps for d in s.changed] == [
        "account t_o1 Description: renamed -> hku speech lab",
        "account t_a3 Parent: t_o9 -> t_o1",
        "account t_a3 Fairshare: parent -> 100",
        "user alice in t_a3 QOS: normal,t_a3 -> t_a3",
        "user alice in t_a3 DefaultQOS: normal -> t_a3",
    ]


def test_an_account_record_outliving_its_association_gets_its_texts_fixed_as_it_returns() -> None:
    # sacctmgr keeps an old record's Description when an association is added to it again
    wanted = wanted_state([terms()], NAMES, "aisc", NOW)
    current = slurm_has(wanted)
    assocs = tuple(a for a in current.associations if a.account != "t_a3" or a.user)
    records = tuple(
        Account("t_a3", "old project", "old org") if a.name == "t_a3" else a
        for a in current.accounts
    )
    steps = plan_sync(wanted, Current(assocs, records, current.qos))
    assert [s.command.method for s in steps] == ["add_account", "modify_account"]
    assert steps[0].created == (SlurmObject("account", "t_a3"),)
    assert steps[1].command.options == (
        ("description", "cantonese asr"),
        ("organization", "hku speech lab"),
    )


def test_what_no_award_stands_for_goes_users_first_then_children_then_parents_then_qos() -> None:
    wanted = wanted_state([terms(1)], NAMES, "aisc", NOW)
    current = slurm_has(wanted)
    stale = Current(
        (
            *current.associations,
            Association("t_o7", "", "root", "1", (), ""),
            Association("t_a8", "", "t_o7", "5", (), ""),
            Association("t_a8", "carol", "", "1", ("t_a8",), "t_a8"),
            Association("t_a1", "mallory", "", "1", ("t_a1",), "t_a1"),
        ),
        current.accounts,
        (*current.qos, Qos("t_a8", ("NoDecay",), {}, {}, None)),
    )
    steps = plan_sync(wanted, stale)
    assert [str(s.command) for s in steps] == [
        "remove_user mallory t_a1",
        "remove_user carol t_a8",
        "delete_account t_a8",
        "delete_account t_o7",
        "delete_qos t_a8",
    ]
    report = SyncReport.of(steps, dry_run=True)
    assert report.dry_run and report.created == () and report.changed == ()
    assert report.lines() == [
        "removed user mallory in t_a1",
        "removed user carol in t_a8",
        "removed account t_a8",
        "removed account t_o7",
        "removed qos t_a8",
    ]


def test_the_report_lists_only_what_it_was_given() -> None:
    a = SlurmObject("account", "t_a1")
    steps = [
        Step(Command("delete_account", ("t_a1",)), removed=(a,)),
        Step(
            Command("modify_account", ("t_a2",), (("fairshare", "5"),)),
            changed=(Drift(SlurmObject("account", "t_a2"), "Fairshare", "1", "5"),),
        ),
    ]
    report = SyncReport.of(steps, failed=["add_user x t_a3 t_a3: sacctmgr: refused"])
    assert str(report) == (
        "drift account t_a2 Fairshare: 1 -> 5; removed account t_a1; "
        "failed add_user x t_a3 t_a3: sacctmgr: refused"
    )
    assert str(steps[1].command) == "modify_account t_a2 fairshare=5"


# -- import ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "name"),
    [
        (Account("hku", "hku", "hku"), "hku"),  # Slurm's defaults: the account's own name
        (Account("hku", "university of hong kong", "hku"), "university of hong kong"),
        (Account("hku", "hku", "the university"), "the university"),
        (Account("hku", "computer science", "hku faculty"), "hku faculty"),
        (Account("hku", " ", ""), "hku"),
        (None, "hku"),
    ],
)
def test_an_imported_organisation_is_named_by_organization_then_description(
    record: Account | None, name: str
) -> None:
    assert organisation_name("hku", record) == name
