"""Notifications: an outbox of messages to users, shown in the portal and mailed after commit.

Events write Notification rows in the same transaction as the change they announce (a decision)
or in a periodic check (`check_due`: low balances, awards ending, invoices, reports due). Each row
has a key, unique per user, so an event notifies once however often the check runs. `send_pending`
mails what has not been mailed, one message per transaction.
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aisc.config import Settings
from aisc.domain.errors import NotFound
from aisc.domain.model import Role
from aisc.domain.money import SECONDS_PER_HOUR, format_cents
from aisc.services import progress
from aisc.services.allocations import balance_of
from aisc.services.context import Actor, utcnow
from aisc.services.mailer import Mailer
from aisc.store.tables import Allocation, JobCharge, Notification, ProgressReport, User
from aisc.store.uow import UnitOfWork

log = logging.getLogger(__name__)

KINDS = frozenset({"decision", "low_balance", "ending", "invoice", "report_due", "assignment"})
MAX_EMAIL_ATTEMPTS = 5
SUBJECT_MAX = 300  # the column's length
# failures that concern one message; any other failure means the server is away, so a batch stops
_MESSAGE_ERRORS = (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError)


@dataclass(frozen=True)
class NotificationSettings:
    low_balance_percents: tuple[int, ...] = (25, 10)
    ending_days: int = 14
    report_reminder_days: int = 7


def notification_settings(settings: Settings) -> NotificationSettings:
    return NotificationSettings(
        low_balance_percents=settings.low_balance_percents(),
        ending_days=settings.notify_ending_days,
        report_reminder_days=settings.notify_report_reminder_days,
    )


@dataclass(frozen=True)
class NotificationRun:
    """What one periodic run did."""

    created: int
    emailed: int


# -- writing ----------------------------------------------------------------------------------


def notify(
    session: Session,
    user_ids: Iterable[int],
    key: str,
    kind: str,
    subject: str,
    body: str,
    link: str = "",
) -> int:
    """Add a notification for each user who has none with this key, inside the caller's
    transaction (nothing is committed); returns how many were added."""
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind!r}")
    wanted = list(dict.fromkeys(user_ids))
    if not wanted:
        return 0
    have = set(
        session.scalars(
            select(Notification.user_id).where(
                Notification.key == key, Notification.user_id.in_(wanted)
            )
        )
    )
    if len(subject) > SUBJECT_MAX:
        subject = subject[: SUBJECT_MAX - 1] + "…"
    added = 0
    for user_id in wanted:
        if user_id in have:
            continue
        try:
            with session.begin_nested():
                session.add(
                    Notification(
                        user_id=user_id, key=key, kind=kind, subject=subject, body=body, link=link
                    )
                )
        except IntegrityError:
            continue  # another transaction notified this user of this event at the same moment
        added += 1
    return added


def org_applicants(session: Session, org_id: int) -> list[int]:
    """The active applicant users of an organisation: who hears about its awards."""
    return list(
        session.scalars(
            select(User.id)
            .where(
                User.org_id == org_id,
                User.role == Role.APPLICANT.value,
                User.active.is_(True),
            )
            .order_by(User.id)
        )
    )


# -- reading ----------------------------------------------------------------------------------


def list_notifications(
    uow: UnitOfWork, actor: Actor, unread_only: bool = False, limit: int = 50
) -> list[Notification]:
    """The actor's own notifications, newest first."""
    with uow:
        query = (
            select(Notification)
            .where(Notification.user_id == actor.user_id)
            .order_by(Notification.created_at.desc(), Notification.id.desc())
            .limit(max(0, limit))
        )
        if unread_only:
            query = query.where(Notification.read_at.is_(None))
        return list(uow.session.scalars(query))


def unread_count(uow: UnitOfWork, actor: Actor) -> int:
    with uow:
        count = uow.session.scalar(
            select(func.count())
            .select_from(Notification)
            .where(Notification.user_id == actor.user_id, Notification.read_at.is_(None))
        )
        return count or 0


def mark_read(uow: UnitOfWork, actor: Actor, notification_id: int | None = None) -> None:
    """Mark one of the actor's notifications read, or all of them (None)."""
    now = utcnow()
    with uow:
        if notification_id is None:
            uow.session.execute(
                update(Notification)
                .where(Notification.user_id == actor.user_id, Notification.read_at.is_(None))
                .values(read_at=now)
            )
        else:
            note = uow.session.get(Notification, notification_id)
            # another user's notification is as good as absent: its existence is not disclosed
            if note is None or note.user_id != actor.user_id:
                raise NotFound(f"notification {notification_id} does not exist")
            if note.read_at is None:
                note.read_at = now
        uow.commit()


# -- the periodic check -----------------------------------------------------------------------


def check_due(uow: UnitOfWork, now: datetime, settings: NotificationSettings) -> int:
    """Notify of low balances, awards ending, last month's invoices and reports due; returns
    how many notifications were created. Running it again creates none for the same events."""
    created = 0
    with uow:
        session = uow.session
        recipients = _Recipients(session)
        progress.schedule_missing(session)  # awards made before reports existed
        open_allocations = session.scalars(
            select(Allocation)
            .where(Allocation.status == "active", Allocation.ends_at > now)
            .order_by(Allocation.id)
        ).all()
        for allocation in open_allocations:
            users = recipients.of(allocation.org_id)
            if users:
                created += _low_balance(uow, allocation, users, settings)
                created += _ending(session, allocation, users, now, settings)
        created += _invoices(session, recipients, now)
        created += _reports_due(session, recipients, now, settings)
        uow.commit()
    return created


class _Recipients:
    def __init__(self, session: Session) -> None:
        self._session = session
        self._by_org: dict[int, list[int]] = {}

    def of(self, org_id: int) -> list[int]:
        if org_id not in self._by_org:
            self._by_org[org_id] = org_applicants(self._session, org_id)
        return self._by_org[org_id]


def _hours(gpu_seconds: int) -> str:
    return f"{gpu_seconds / SECONDS_PER_HOUR:,.1f}"


def _low_balance(
    uow: UnitOfWork, allocation: Allocation, users: list[int], settings: NotificationSettings
) -> int:
    if not settings.low_balance_percents:
        return 0
    balance = balance_of(uow, allocation)
    granted, available = balance.granted_gpu_seconds, balance.available_gpu_seconds
    if granted <= 0:
        return 0
    created = 0
    for pct in sorted(settings.low_balance_percents, reverse=True):
        if available * 100 > granted * pct:
            continue
        created += notify(
            uow.session,
            users,
            key=f"low_balance:{allocation.id}:{pct}",
            kind="low_balance",
            subject=f"Allocation {allocation.id} is down to {pct}% of its GPU-hours",
            body=(
                f"Allocation {allocation.id} ({allocation.name}) has {_hours(available)} of its "
                f"{allocation.gpu_hours:,} awarded {allocation.gpu_model} GPU-hours available, "
                f"at or below {pct}%. Jobs that need more than what is left will not start."
            ),
            link=f"/allocations/{allocation.id}",
        )
    return created


def _ending(
    session: Session,
    allocation: Allocation,
    users: list[int],
    now: datetime,
    settings: NotificationSettings,
) -> int:
    if allocation.ends_at > now + timedelta(days=settings.ending_days):
        return 0
    _, last_day = progress.award_days(allocation)
    return notify(
        session,
        users,
        key=f"ending:{allocation.id}",
        kind="ending",
        subject=f"Allocation {allocation.id} ends on {last_day.isoformat()}",
        body=(
            f"Allocation {allocation.id} ({allocation.name}) ends at the end of "
            f"{last_day.isoformat()} (UTC). No job runs in it after that, and GPU-hours left "
            "unused return to the fund."
        ),
        link=f"/allocations/{allocation.id}",
    )


def _month_start(day: date) -> datetime:
    return datetime(day.year, day.month, 1, tzinfo=UTC)


def _invoices(session: Session, recipients: _Recipients, now: datetime) -> int:
    """Once a month is over, each organisation with jobs settled in it hears its invoice is
    ready."""
    this_month = _month_start(now.astimezone(UTC).date())
    last_month = _month_start((this_month - timedelta(days=1)).date())
    month = f"{last_month:%Y-%m}"
    rows = session.execute(
        select(
            JobCharge.org_id,
            func.count(),
            func.sum(JobCharge.charge_cents),
            func.sum(JobCharge.subsidy_cents),
            func.sum(JobCharge.copay_cents),
        )
        .where(JobCharge.settled_at >= last_month, JobCharge.settled_at < this_month)
        .group_by(JobCharge.org_id)
        .order_by(JobCharge.org_id)
    ).all()
    created = 0
    for org_id, jobs, charge, subsidy, copay in rows:
        users = recipients.of(org_id)
        if not users:
            continue
        created += notify(
            session,
            users,
            key=f"invoice:{org_id}:{month}",
            kind="invoice",
            subject=f"Your invoice for {month} is ready",
            body=(
                f"{jobs} job{'s' if jobs != 1 else ''} settled in {month} (UTC) were charged "
                f"HK${format_cents(int(charge))}; the subsidy covers "
                f"HK${format_cents(int(subsidy))} and your organisation pays "
                f"HK${format_cents(int(copay))}."
            ),
            link=f"/invoices?month={month}",
        )
    return created


def _reports_due(
    session: Session, recipients: _Recipients, now: datetime, settings: NotificationSettings
) -> int:
    today = now.astimezone(UTC).date()
    rows = session.execute(
        select(ProgressReport, Allocation)
        .join(Allocation, Allocation.id == ProgressReport.allocation_id)
        .where(
            ProgressReport.submitted_at.is_(None),
            ProgressReport.due_on <= today + timedelta(days=settings.report_reminder_days),
            # a closed award still owes its final report, not the interim ones
            or_(Allocation.status != "closed", ProgressReport.final.is_(True)),
        )
        .order_by(ProgressReport.due_on, ProgressReport.id)
    ).all()
    created = 0
    for report, allocation in rows:
        users = recipients.of(allocation.org_id)
        if not users:
            continue
        what = "final progress report" if report.final else "progress report"
        due = report.due_on.isoformat()
        if report.due_on < today:
            subject = f"Your {what} for allocation {allocation.id} is overdue"
            when = f"was due on {due}"
        else:
            subject = f"Your {what} for allocation {allocation.id} is due on {due}"
            when = f"is due on {due}"
        created += notify(
            session,
            users,
            key=f"report_due:{report.id}",
            kind="report_due",
            subject=subject,
            body=(
                f"The {what} for allocation {allocation.id} ({allocation.name}) {when}. "
                "The award's conditions call for it; submit it in the portal."
            ),
            link="/reports",
        )
    return created


# -- mailing ----------------------------------------------------------------------------------


def email_text(note: Notification, base_url: str = "") -> str:
    text = note.body.rstrip() + "\n"
    if note.link:
        text += f"\n{base_url.rstrip('/')}{note.link}\n"
    return text


def send_pending(uow: UnitOfWork, mailer: Mailer, limit: int = 100, base_url: str = "") -> int:
    """Mail notifications not yet mailed (oldest first, at most `limit`); returns how many were
    sent. Each message is recorded in its own transaction, so a crash mails at most one message
    twice. An SMTP failure is logged and stored on the message, which is tried again on a later
    run until it has failed MAX_EMAIL_ATTEMPTS times; it never raises. `base_url` prefixes the
    portal link in the mail."""
    sent = 0
    last_id = 0
    for _ in range(max(0, limit)):
        with uow:
            session = uow.session
            postgres = session.get_bind().dialect.name == "postgresql"
            query = (
                select(Notification, User.email)
                .join(User, User.id == Notification.user_id)
                .where(
                    Notification.emailed_at.is_(None),
                    Notification.email_attempts < MAX_EMAIL_ATTEMPTS,
                    Notification.id > last_id,
                    User.active.is_(True),
                )
                .order_by(Notification.id)
                .limit(1)
            )
            if postgres:
                # hold the row while mailing so that a second sender skips it, not repeats it
                query = query.with_for_update(of=Notification, skip_locked=True)
            row = session.execute(query).first()
            if row is None:
                break
            note, address = row[0], row[1]
            last_id = note.id
            if not postgres:
                # SQLite's write lock is the whole database's: do not hold it while mailing
                uow.commit()
            try:
                mailer.send(address, note.subject, email_text(note, base_url))
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"[:2000]
                log.warning("mailing notification %s to %s failed: %s", note.id, address, error)
                session.execute(
                    update(Notification)
                    .where(Notification.id == note.id)
                    .values(
                        email_attempts=Notification.email_attempts + 1,
                        email_error=error,
                    )
                )
                uow.commit()
                if isinstance(exc, _MESSAGE_ERRORS):
                    continue
                break  # the server is away or refuses us: the next run tries again
            session.execute(
                update(Notification)
                .where(Notification.id == note.id)
                .values(emailed_at=utcnow(), email_error="")
            )
            uow.commit()
            sent += 1
    return sent


def run_once(
    uow_factory: Callable[[], UnitOfWork],
    settings: Settings,
    mailer: Mailer | None,
    now: datetime | None = None,
) -> NotificationRun:
    """One periodic run: check for due events, then mail what is pending (with a mailer)."""
    created = check_due(uow_factory(), now or utcnow(), notification_settings(settings))
    emailed = send_pending(uow_factory(), mailer, base_url=settings.url) if mailer else 0
    return NotificationRun(created, emailed)
