"""Awards into Slurm, and an existing Slurm cluster into aisc.

Sync: every organisation with an award gets an account under `root`; every allocation gets a
child account with a fair-share weight proportional to its award, a `NoDecay` QOS holding its
budget (`GrpTRESMins` the award, `GrpTRESRunMins` what is not yet used), and associations
for the service user and the organisation's members. The sync compares what the database wants
with what Slurm has under aisc's prefix and runs only the difference, so it is idempotent and
reconciling: a sync cut short by an outage is finished by the next one, and drift made by hand
in Slurm is reported and undone. It never writes to aisc's database.

Import runs once the other way: a cluster's top-level accounts become organisations and their
users become members; child accounts are listed as projects waiting for an award.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import or_, select

from aisc.backends.slurm import (
    Account,
    Association,
    Qos,
    SlurmCli,
    SlurmError,
    SlurmUnavailable,
    sacctmgr_value,
)
from aisc.domain.errors import ValidationError
from aisc.domain.model import Role
from aisc.ledger import accounts as acc
from aisc.services import accounts
from aisc.services.context import Actor
from aisc.services.slurm_names import SlurmNames
from aisc.store.tables import Allocation, Organisation, User
from aisc.store.uow import UnitOfWork

GPU = "gres/gpu"
NO_DECAY = "NoDecay"
ROOT = "root"
DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def slurm_text(text: str) -> str:
    """A description or organisation as sacctmgr stores it: sanitised as the client sends it,
    then lower-cased by Slurm's tolower, which changes ASCII letters only."""
    return "".join(c.lower() if c.isascii() else c for c in sacctmgr_value(text))


# -- what aisc wants ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AwardTerms:
    """One allocation as the sync sees it, read from the database and the ledger."""

    allocation_id: int
    name: str
    org_id: int
    org_name: str
    gpu_hours: int
    status: str
    starts_at: datetime
    ends_at: datetime
    available_gpu_seconds: int  # the ledger's gpu_available: granted - used - reserved
    reserved_gpu_seconds: int  # held by aisc's jobs that Slurm has or is about to get
    members: tuple[str, ...]  # Slurm user names of the organisation's active members

    @property
    def unused_gpu_seconds(self) -> int:
        """What Slurm may still run: granted - used while the award is open, 0 once closed.

        Reserved time counts as runnable because aisc reserves before `sbatch`, and Slurm
        charges a job's own remaining minutes against GrpTRESRunMins when it starts: were the
        reservation subtracted too, a job pending in Slurm across a sync would be held by its
        own reservation (QOSGrpGRESRunMinutes) for ever."""
        return max(0, self.available_gpu_seconds + self.reserved_gpu_seconds)


@dataclass(frozen=True)
class WantedAccount:
    name: str
    parent: str
    fairshare: int
    description: str  # as Slurm stores it (slurm_text)
    organization: str


@dataclass(frozen=True)
class WantedQos:
    name: str
    gpu_minutes: int  # GrpTRESMins: the award
    run_minutes: int  # GrpTRESRunMins: what the ledger has not seen used
    blocked: bool  # GrpSubmitJobs=0: Slurm takes no new jobs


@dataclass(frozen=True)
class WantedUser:
    user: str
    account: str
    qos: str


@dataclass(frozen=True)
class Wanted:
    accounts: tuple[WantedAccount, ...]  # parents before children
    qos: tuple[WantedQos, ...]
    users: tuple[WantedUser, ...]


def open_for_jobs(terms: AwardTerms, now: datetime) -> bool:
    """Slurm may take new jobs under the award: active, inside its period, GPU-minutes left."""
    return (
        terms.status == "active"
        and terms.starts_at <= now < terms.ends_at
        and terms.unused_gpu_seconds >= 60
    )


def wanted_state(
    awards: Iterable[AwardTerms], names: SlurmNames, service_user: str, now: datetime
) -> Wanted:
    """What Slurm should hold for these awards (pure)."""
    awards = sorted(awards, key=lambda t: t.allocation_id)
    children: list[WantedAccount] = []
    qos: list[WantedQos] = []
    users: list[WantedUser] = []
    org_share: dict[int, int] = {}
    org_name: dict[int, str] = {}
    for t in awards:
        share = max(1, t.gpu_hours)
        org_share[t.org_id] = org_share.get(t.org_id, 0) + share
        org_name[t.org_id] = t.org_name
        account = names.allocation_account(t.allocation_id)
        qos_name = names.allocation_qos(t.allocation_id)
        children.append(
            WantedAccount(
                account,
                names.org_account(t.org_id),
                share,
                slurm_text(t.name),
                slurm_text(t.org_name),
            )
        )
        qos.append(
            WantedQos(
                qos_name,
                gpu_minutes=t.gpu_hours * 60,
                run_minutes=t.unused_gpu_seconds // 60,
                blocked=not open_for_jobs(t, now),
            )
        )
        for user in sorted({service_user, *t.members}):
            users.append(WantedUser(user, account, qos_name))
    # an organisation weighs what its awards weigh together, so shares stay proportional to
    # the awards across organisations as well as within one
    parents = [
        WantedAccount(
            names.org_account(org_id),
            ROOT,
            org_share[org_id],
            slurm_text(org_name[org_id]),
            slurm_text(org_name[org_id]),
        )
        for org_id in sorted(org_share)
    ]
    return Wanted(tuple(parents + children), tuple(qos), tuple(users))


def read_awards(uow: UnitOfWork) -> list[AwardTerms]:
    """Every allocation with its organisation, members and GPU-seconds left, in one read."""
    with uow:
        allocations = list(uow.session.scalars(select(Allocation).order_by(Allocation.id)))
        org_ids = {a.org_id for a in allocations}
        orgs = {
            o.id: o.name
            for o in uow.session.scalars(select(Organisation).where(Organisation.id.in_(org_ids)))
        }
        members: dict[int, list[str]] = {}
        found = uow.session.scalars(
            select(User).where(
                User.org_id.in_(org_ids), User.active.is_(True), User.slurm_user.is_not(None)
            )
        )
        for user in found:
            if user.org_id is not None and user.slurm_user:
                members.setdefault(user.org_id, []).append(user.slurm_user)
        ledger_names = [
            name
            for a in allocations
            for name in (acc.gpu_available(a.scheme_id, a.id), acc.gpu_reserved(a.scheme_id, a.id))
        ]
        balances = uow.ledger.balances(ledger_names)
        return [
            AwardTerms(
                allocation_id=a.id,
                name=a.name,
                org_id=a.org_id,
                org_name=orgs[a.org_id],
                gpu_hours=a.gpu_hours,
                status=a.status,
                starts_at=a.starts_at,
                ends_at=a.ends_at,
                available_gpu_seconds=balances[acc.gpu_available(a.scheme_id, a.id)],
                reserved_gpu_seconds=balances[acc.gpu_reserved(a.scheme_id, a.id)],
                members=tuple(sorted(members.get(a.org_id, ()))),
            )
            for a in allocations
        ]


# -- what Slurm has ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Current:
    """Slurm's accounts, QOS and associations under aisc's prefix."""

    associations: tuple[Association, ...]
    accounts: tuple[Account, ...]  # account records (an association-less one can linger)
    qos: tuple[Qos, ...]


def current_state(cli: SlurmCli, names: SlurmNames) -> Current:
    return Current(
        tuple(a for a in cli.associations() if names.owns(a.account)),
        tuple(a for a in cli.accounts() if names.owns(a.name)),
        tuple(q for q in cli.qos() if names.owns(q.name)),
    )


# -- the difference ----------------------------------------------------------------------------

Kind = Literal["account", "qos", "user"]
Method = Literal[
    "add_qos",
    "modify_qos",
    "delete_qos",
    "add_account",
    "modify_account",
    "delete_account",
    "add_user",
    "modify_user",
    "remove_user",
]


@dataclass(frozen=True)
class SlurmObject:
    kind: Kind
    name: str  # the account, QOS or user name
    account: str = ""  # a user association's account

    def __str__(self) -> str:
        if self.kind == "user":
            return f"user {self.name} in {self.account}"
        return f"{self.kind} {self.name}"


@dataclass(frozen=True)
class Drift:
    """One field Slurm holds differently from what aisc wants."""

    target: SlurmObject
    field: str
    slurm: str
    aisc: str

    def __str__(self) -> str:
        return f"{self.target} {self.field}: {self.slurm or 'none'} -> {self.aisc or 'none'}"


@dataclass(frozen=True)
class Command:
    """One SlurmCli call; data, so a plan can be shown, compared and tested without Slurm."""

    method: Method
    args: tuple[str | int, ...]
    options: tuple[tuple[str, str], ...] = ()

    def apply(self, cli: SlurmCli) -> None:
        call: Callable[..., Any] = getattr(cli, self.method)
        call(*self.args, **dict(self.options))

    def __str__(self) -> str:
        words = [self.method, *map(str, self.args), *(f"{k}={v}" for k, v in self.options)]
        return " ".join(words)


@dataclass(frozen=True)
class Step:
    """A command and what it changes in Slurm."""

    command: Command
    created: tuple[SlurmObject, ...] = ()
    changed: tuple[Drift, ...] = ()
    removed: tuple[SlurmObject, ...] = ()


@dataclass(frozen=True)
class SyncReport:
    created: tuple[SlurmObject, ...] = ()
    changed: tuple[Drift, ...] = ()  # each one drift, corrected (or to correct, in a dry run)
    removed: tuple[SlurmObject, ...] = ()
    failed: tuple[str, ...] = ()  # commands Slurm refused: "command: message"
    dry_run: bool = False
    commands: tuple[Command, ...] = field(default=(), compare=False)

    @classmethod
    def of(
        cls, steps: Sequence[Step], failed: Sequence[str] = (), dry_run: bool = False
    ) -> SyncReport:
        return cls(
            created=tuple(o for s in steps for o in s.created),
            changed=tuple(d for s in steps for d in s.changed),
            removed=tuple(o for s in steps for o in s.removed),
            failed=tuple(failed),
            dry_run=dry_run,
            commands=tuple(s.command for s in steps),
        )

    @property
    def in_sync(self) -> bool:
        return not (self.created or self.changed or self.removed or self.failed)

    def lines(self) -> list[str]:
        return [
            *(f"created {o}" for o in self.created),
            *(f"drift {d}" for d in self.changed),
            *(f"removed {o}" for o in self.removed),
            *(f"failed {f}" for f in self.failed),
        ]

    def __str__(self) -> str:
        return "in sync" if self.in_sync else "; ".join(self.lines())


def tres(value: int) -> str:
    return f"{GPU}={value}"


def show_tres(limits: dict[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(limits.items()))


def tres_setting(have: dict[str, int], gpu_minutes: int) -> str:
    """Set the GPU limit and clear (-1) any other TRES someone added to aisc's QOS."""
    return ",".join([tres(gpu_minutes), *(f"{k}=-1" for k in sorted(have) if k != GPU)])


def plan_sync(wanted: Wanted, current: Current) -> list[Step]:
    """The commands that make Slurm hold what aisc wants, in an order Slurm accepts: QOS before
    the users that name them, parents before children, users before their accounts go (pure)."""
    return [
        *_qos_steps(wanted, current),
        *_account_steps(wanted, current),
        *_user_steps(wanted, current),
        *_removal_steps(wanted, current),
    ]


def _qos_steps(wanted: Wanted, current: Current) -> list[Step]:
    have = {q.name: q for q in current.qos}
    steps = []
    for w in wanted.qos:
        target = SlurmObject("qos", w.name)
        q = have.get(w.name)
        if q is None:
            limits = [
                ("flags", NO_DECAY),
                ("grptresmins", tres(w.gpu_minutes)),
                ("grptresrunmins", tres(w.run_minutes)),
            ]
            if w.blocked:
                limits.append(("grpsubmitjobs", "0"))
            steps.append(Step(Command("add_qos", (w.name,), tuple(limits)), created=(target,)))
            continue
        drifts: list[Drift] = []
        settings: list[tuple[str, str]] = []
        if q.flags != (NO_DECAY,):
            drifts.append(Drift(target, "Flags", ",".join(q.flags), NO_DECAY))
            settings.append(("flags", NO_DECAY))
        for label, key, limits_have, minutes in (
            ("GrpTRESMins", "grptresmins", q.grp_tres_mins, w.gpu_minutes),
            ("GrpTRESRunMins", "grptresrunmins", q.grp_tres_run_mins, w.run_minutes),
        ):
            if limits_have != {GPU: minutes}:
                drifts.append(Drift(target, label, show_tres(limits_have), tres(minutes)))
                settings.append((key, tres_setting(limits_have, minutes)))
        submit = 0 if w.blocked else None
        if q.grp_submit_jobs != submit:
            shown = "" if q.grp_submit_jobs is None else str(q.grp_submit_jobs)
            drifts.append(Drift(target, "GrpSubmitJobs", shown, "0" if w.blocked else ""))
            settings.append(("grpsubmitjobs", "0" if w.blocked else "-1"))
        if settings:
            command = Command("modify_qos", (w.name,), tuple(settings))
            steps.append(Step(command, changed=tuple(drifts)))
    return steps


def _account_steps(wanted: Wanted, current: Current) -> list[Step]:
    assocs = {a.account: a for a in current.associations if not a.user}
    records = {a.name: a for a in current.accounts}
    steps = []
    for w in wanted.accounts:
        target = SlurmObject("account", w.name)
        assoc = assocs.get(w.name)
        if assoc is None:
            command = Command(
                "add_account", (w.name, w.parent, w.fairshare, w.description, w.organization)
            )
            steps.append(Step(command, created=(target,)))
        drifts: list[Drift] = []
        settings: list[tuple[str, str]] = []
        if assoc is not None and assoc.parent != w.parent:
            drifts.append(Drift(target, "Parent", assoc.parent, w.parent))
            settings.append(("parent", w.parent))
        if assoc is not None and assoc.fairshare != str(w.fairshare):
            drifts.append(Drift(target, "Fairshare", assoc.fairshare, str(w.fairshare)))
            settings.append(("fairshare", str(w.fairshare)))
        # adding an association to an account record that outlived its last one keeps the old
        # record's texts, so they are compared whether or not the association is new
        record = records.get(w.name)
        if record is not None and record.description != w.description:
            drifts.append(Drift(target, "Description", record.description, w.description))
            settings.append(("description", w.description))
        if record is not None and record.organization != w.organization:
            drifts.append(Drift(target, "Organization", record.organization, w.organization))
            settings.append(("organization", w.organization))
        if settings:
            command = Command("modify_account", (w.name,), tuple(settings))
            steps.append(Step(command, changed=tuple(drifts)))
    return steps


def _user_steps(wanted: Wanted, current: Current) -> list[Step]:
    have = {(a.account, a.user): a for a in current.associations if a.user}
    steps = []
    for w in wanted.users:
        target = SlurmObject("user", w.user, w.account)
        assoc = have.get((w.account, w.user))
        if assoc is None:
            command = Command("add_user", (w.user, w.account, w.qos))
            steps.append(Step(command, created=(target,)))
            continue
        drifts: list[Drift] = []
        settings: list[tuple[str, str]] = []
        if assoc.qos != (w.qos,):
            drifts.append(Drift(target, "QOS", ",".join(assoc.qos), w.qos))
            settings.append(("qos", w.qos))
        if assoc.default_qos != w.qos:
            drifts.append(Drift(target, "DefaultQOS", assoc.default_qos, w.qos))
            settings.append(("defaultqos", w.qos))
        if settings:
            command = Command("modify_user", (w.user, w.account), tuple(settings))
            steps.append(Step(command, changed=tuple(drifts)))
    return steps


def _removal_steps(wanted: Wanted, current: Current) -> list[Step]:
    users = {(u.account, u.user) for u in wanted.users}
    accounts_wanted = {a.name for a in wanted.accounts}
    qos_wanted = {q.name for q in wanted.qos}
    steps = []
    for a in sorted(current.associations, key=lambda a: (a.account, a.user)):
        if a.user and (a.account, a.user) not in users:
            steps.append(
                Step(
                    Command("remove_user", (a.user, a.account)),
                    removed=(SlurmObject("user", a.user, a.account),),
                )
            )
    parents = {a.account: a.parent for a in current.associations if not a.user}

    def depth(name: str) -> int:
        seen = 0
        while name in parents and seen <= len(parents):
            name, seen = parents[name], seen + 1
        return seen

    # children before their parents: deleting a parent would take its children with it
    gone = [name for name in parents if name not in accounts_wanted]
    for name in sorted(gone, key=lambda n: (-depth(n), n)):
        steps.append(
            Step(
                Command("delete_account", (name,)),
                removed=(SlurmObject("account", name),),
            )
        )
    for q in sorted(current.qos, key=lambda q: q.name):
        if q.name not in qos_wanted:
            steps.append(
                Step(Command("delete_qos", (q.name,)), removed=(SlurmObject("qos", q.name),))
            )
    return steps


# -- the use cases -----------------------------------------------------------------------------


def sync_allocations(
    uow: UnitOfWork,
    cli: SlurmCli,
    names: SlurmNames,
    service_user: str,
    now: datetime,
    dry_run: bool = False,
) -> SyncReport:
    """Make Slurm hold every allocation as an account, QOS and user associations; remove what
    aisc's prefix holds for allocations that are gone. Returns what changed (or would, in a dry
    run). A command Slurm refuses is reported in `failed` and the others still run; an outage
    (SlurmUnavailable) stops the sync, and the next one finishes the work."""
    user = accounts.unix_user(service_user)
    wanted = wanted_state(read_awards(uow), names, user, now)
    steps = plan_sync(wanted, current_state(cli, names))
    if dry_run:
        return SyncReport.of(steps, dry_run=True)
    done: list[Step] = []
    failed: list[str] = []
    for step in steps:
        try:
            step.command.apply(cli)
        except SlurmUnavailable:
            raise
        except SlurmError as exc:
            failed.append(f"{step.command}: {exc}")
        else:
            done.append(step)
    return SyncReport.of(done, failed)


@dataclass(frozen=True)
class ManagedAccount:
    """An account aisc manages, as Slurm holds it now (for `aisc slurm show`)."""

    name: str
    parent: str
    fairshare: str
    description: str
    qos: Qos | None  # the allocation's QOS; None for an organisation's account
    users: tuple[str, ...]


def managed_accounts(cli: SlurmCli, names: SlurmNames) -> list[ManagedAccount]:
    """Each organisation's account followed by its allocations' accounts."""
    current = current_state(cli, names)
    qos = {q.name: q for q in current.qos}
    texts = {a.name: a.description for a in current.accounts}
    users: dict[str, list[str]] = {}
    for a in current.associations:
        if a.user:
            users.setdefault(a.account, []).append(a.user)
    accounts_ = [a for a in current.associations if not a.user]
    owned = {a.account for a in accounts_}

    def order(a: Association) -> tuple[str, int, str]:
        top = a.parent if a.parent in owned else a.account
        return (top, 0 if top == a.account else 1, a.account)

    return [
        ManagedAccount(
            name=a.account,
            parent=a.parent,
            fairshare=a.fairshare,
            description=texts.get(a.account, ""),
            qos=qos.get(a.account),
            users=tuple(sorted(users.get(a.account, ()))),
        )
        for a in sorted(accounts_, key=order)
    ]


# -- import ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportedOrganisation:
    name: str
    accounts: tuple[str, ...]  # the top-level Slurm accounts it came from
    org_id: int
    created: bool  # False: an organisation of that name was there already


@dataclass(frozen=True)
class ImportedUser:
    slurm_user: str
    email: str
    organisation: str
    user_id: int
    created: bool  # False: a user with that Slurm name or email was there already


@dataclass(frozen=True)
class WaitingProject:
    """A child account: a project that runs under aisc once it has an award."""

    account: str
    parent: str
    organisation: str
    users: tuple[str, ...]


@dataclass(frozen=True)
class ImportReport:
    organisations: tuple[ImportedOrganisation, ...]
    users: tuple[ImportedUser, ...]
    projects: tuple[WaitingProject, ...]
    skipped: tuple[str, ...]  # what was left out, and why

    @property
    def created_organisations(self) -> list[ImportedOrganisation]:
        return [o for o in self.organisations if o.created]

    @property
    def created_users(self) -> list[ImportedUser]:
        return [u for u in self.users if u.created]


def organisation_name(account: str, record: Account | None) -> str:
    """The organisation a top-level account stands for: its Organization, else its Description,
    else its name (Slurm fills both texts with the account's name when none is given)."""
    texts = (record.organization, record.description) if record else ()
    return next((t.strip() for t in texts if t.strip() and t.strip() != account), account)


def import_cluster(
    uow: UnitOfWork,
    actor: Actor,
    cli: SlurmCli,
    email_domain: str,
    category: str,
    names: SlurmNames,
) -> ImportReport:
    """Organisations and members from an existing cluster's accounts and users, once: running it
    again creates nothing new. Skips `root`, the root user and what aisc's prefix names; changes
    nothing in Slurm; writes everything in one transaction or nothing."""
    actor.require(Role.OPERATOR)
    domain = email_domain.strip().lower()
    if not DOMAIN.match(domain):
        raise ValidationError(f"{email_domain!r} is not an email domain (e.g. hku.hk)")
    cat = accounts.org_category(category)
    assocs = cli.associations()
    records = {a.name: a for a in cli.accounts()}

    parents = {
        a.account: a.parent
        for a in assocs
        if not a.user and a.account != ROOT and not names.owns(a.account)
    }

    def top_of(account: str) -> str | None:
        """The top-level account above `account`; None if the chain leaves what is imported."""
        for _ in range(len(parents) + 1):
            parent = parents.get(account)
            if parent is None:
                return None
            if parent == ROOT:
                return account
            account = parent
        return None  # a loop: Slurm does not allow one, but do not hang on bad output

    tops = sorted(a for a, p in parents.items() if p == ROOT)
    org_of_top = {t: organisation_name(t, records.get(t)) for t in tops}
    skipped: list[str] = []
    members: dict[str, str] = {}  # Slurm user -> organisation name
    direct: dict[str, list[str]] = {}  # account -> its users
    for a in sorted(assocs, key=lambda a: (org_of_top.get(top_of(a.account) or "", ""), a.user)):
        if not a.user or a.account not in parents:
            continue
        top = top_of(a.account)
        if top is None:
            continue
        direct.setdefault(a.account, []).append(a.user)
        if a.user == ROOT:
            continue  # the Slurm administrator, not a grantee
        if not accounts.UNIX_USER.match(a.user):
            note = f"user {a.user}: not a Unix user name aisc accepts"
            if note not in skipped:
                skipped.append(note)
            continue
        org_name = org_of_top[top]
        first = members.setdefault(a.user, org_name)
        if first != org_name:
            note = f"user {a.user} in {org_name}: a user belongs to one organisation ({first})"
            if note not in skipped:
                skipped.append(note)

    with uow:
        session = uow.session
        orgs: dict[str, Organisation] = {}
        imported_orgs: list[ImportedOrganisation] = []
        for org_name in sorted(set(org_of_top.values())):
            if len(org_name) > 200:
                raise ValidationError(f"organisation name {org_name[:40]}... is too long")
            org = session.scalar(select(Organisation).where(Organisation.name == org_name))
            created = org is None
            if org is None:
                org = Organisation(name=org_name, category=cat.value, sector="")
                session.add(org)
                session.flush()
            orgs[org_name] = org
            from_accounts = tuple(t for t in tops if org_of_top[t] == org_name)
            imported_orgs.append(ImportedOrganisation(org_name, from_accounts, org.id, created))
        imported_users: list[ImportedUser] = []
        for user_name, org_name in sorted(members.items()):
            email = f"{user_name}@{domain}"
            if not accounts.EMAIL.match(email):
                raise ValidationError(f"{email!r} is not an email address")
            user = session.scalar(
                select(User).where(or_(User.slurm_user == user_name, User.email == email))
            )
            created = user is None
            if user is None:
                user = User(
                    name=user_name,
                    email=email,
                    role=Role.APPLICANT.value,
                    org_id=orgs[org_name].id,
                    slurm_user=user_name,
                )
                session.add(user)
                session.flush()
            imported_users.append(ImportedUser(user_name, email, org_name, user.id, created))
        uow.commit()

    projects = []
    for name, parent in sorted(parents.items()):
        top = top_of(name)
        if parent != ROOT and top is not None:
            users = tuple(sorted(direct.get(name, ())))
            projects.append(WaitingProject(name, parent, org_of_top[top], users))
    return ImportReport(
        tuple(imported_orgs), tuple(imported_users), tuple(projects), tuple(skipped)
    )
