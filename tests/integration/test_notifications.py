"""Notifications: written with the events they announce, found by the periodic check, and mailed
through a real SMTP server (aiosmtpd on a free local port)."""

from __future__ import annotations

import email
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from pydantic import ValidationError as SettingsError
from sqlalchemy import select

from aisc.config import Settings
from aisc.domain.errors import NotFound
from aisc.runtime import Runtime
from aisc.services import (
    accounts,
    allocations,
    applications,
    decisions,
    notifications,
    progress,
    reviews,
)
from aisc.services.context import Actor, utcnow
from aisc.services.mailer import SmtpMailer, mailer_from_settings
from aisc.store.tables import Allocation, JobCharge, Notification, ProgressReport
from tests.builders import (
    RUBRIC,
    Centre,
    UowFactory,
    add_org,
    application_request,
    award,
    build_centre,
    charged_job,
)

DEFAULTS = notifications.NotificationSettings(
    low_balance_percents=(25, 10), ending_days=14, report_reminder_days=7
)


# -- a real SMTP server -----------------------------------------------------------------------


@dataclass
class Inbox:
    """aiosmtpd handler: keeps every message it is given."""

    messages: list[tuple[list[str], EmailMessage]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=default_policy)
        assert isinstance(message, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), message))
        return "250 OK"

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for _, m in self.messages]


class SmtpServer:
    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.inbox = Inbox()
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def mailer(self) -> SmtpMailer:
        return SmtpMailer("127.0.0.1", self.port, sender="aisc@centre.test", timeout_s=5)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def centre(uow_factory: UowFactory) -> Centre:
    return build_centre(uow_factory)


# -- helpers ----------------------------------------------------------------------------------


def inbox_of(centre: Centre, actor: Actor, kind: str | None = None) -> list[Notification]:
    notes = notifications.list_notifications(centre.uow(), actor)
    return [n for n in notes if kind is None or n.kind == kind]


def reviewed_application(centre: Centre, org: str) -> int:
    applicant = centre.applicants.get(org) or add_org(centre, org)
    app = applications.submit_application(
        centre.uow(), applicant, application_request(centre.scheme_id, 100)
    )
    for reviewer in centre.reviewers[:2]:
        reviews.submit_review(centre.uow(), reviewer, app.id, dict.fromkeys(RUBRIC, 7), "approve")
    return app.id


def allocation_of(centre: Centre, allocation_id: int) -> Allocation:
    with centre.uow() as uow:
        allocation = uow.session.get(Allocation, allocation_id)
        assert allocation is not None
        return allocation


def use(centre: Centre, org: str, allocation_id: int, gpus: int, seconds: int) -> JobCharge:
    """Run a job now for `seconds` on `gpus` GPUs and settle it: the ledger records the use."""
    return charged_job(centre, org, allocation_id, gpus, seconds, limit_s=seconds + 60)


def first_of_next_month(moment: datetime) -> datetime:
    return (moment.replace(day=1) + timedelta(days=32)).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )


# -- decisions --------------------------------------------------------------------------------


def test_an_approval_reaches_the_portal_inbox_and_arrives_by_smtp(
    centre: Centre, smtp: SmtpServer
) -> None:
    app_id = reviewed_application(centre, "HKU")
    second = accounts.create_user(
        centre.uow(),
        centre.operator,
        "HKU Second",
        "second@hku.test",
        "applicant",
        centre.orgs["HKU"],
    )
    colleague = accounts.actor_for(second)
    other = add_org(centre, "CUHK")
    today = utcnow().date()
    allocation = decisions.approve(
        centre.uow(),
        centre.operator,
        app_id,
        decisions.Approval(100, today - timedelta(days=1), today + timedelta(days=90)),
    )

    for actor in (centre.applicants["HKU"], colleague):
        (note,) = inbox_of(centre, actor)
        assert note.kind == "decision"
        assert note.key == f"decision:{app_id}"
        assert note.link == f"/applications/{app_id}"
        assert note.subject == f"Your application {app_id} was approved"
        assert note.body.startswith(f"Your application {app_id} (Cantonese speech model) was")
        assert "100 H800 GPU-hours" in note.body
        assert f"Allocation {allocation.id}" in note.body
        assert notifications.unread_count(centre.uow(), actor) == 1
    assert inbox_of(centre, other) == []
    assert inbox_of(centre, centre.operator) == []

    assert notifications.send_pending(centre.uow(), smtp.mailer()) == 2
    delivered = sorted((rcpt, str(m["Subject"]), str(m["From"])) for rcpt, m in smtp.inbox.messages)
    assert delivered == [
        (["lead@hku.test"], f"Your application {app_id} was approved", "aisc@centre.test"),
        (["second@hku.test"], f"Your application {app_id} was approved", "aisc@centre.test"),
    ]
    _, message = smtp.inbox.messages[0]
    text = message.get_content()
    assert "100 H800 GPU-hours" in text and f"/applications/{app_id}" in text
    # mailed once: a second run finds nothing to send
    assert notifications.send_pending(centre.uow(), smtp.mailer()) == 0
    assert len(smtp.inbox.messages) == 2
    (note,) = inbox_of(centre, colleague)
    assert note.emailed_at is not None and note.email_attempts == 0 and note.email_error == ""


def test_a_rejection_notifies_with_the_reasons(centre: Centre, smtp: SmtpServer) -> None:
    app_id = reviewed_application(centre, "HKU")
    decisions.reject(centre.uow(), centre.operator, app_id, "The plan needs a smaller pilot.")
    (note,) = inbox_of(centre, centre.applicants["HKU"])
    assert note.kind == "decision" and note.key == f"decision:{app_id}"
    assert note.subject == f"Your application {app_id} was not approved"
    assert "The plan needs a smaller pilot." in note.body
    assert notifications.send_pending(centre.uow(), smtp.mailer()) == 1
    ((rcpt, message),) = smtp.inbox.messages
    assert rcpt == ["lead@hku.test"]
    assert "The plan needs a smaller pilot." in message.get_content()


def test_notify_skips_users_who_already_have_the_key(centre: Centre) -> None:
    applicant = add_org(centre, "HKU")
    with centre.uow() as uow:
        args = ("k:1", "ending", "subject", "body")
        assert notifications.notify(uow.session, [applicant.user_id] * 2, *args) == 1
        assert notifications.notify(uow.session, [applicant.user_id], *args) == 0
        uow.commit()
    with centre.uow() as uow:
        ids = [applicant.user_id, centre.operator.user_id]
        assert notifications.notify(uow.session, ids, "k:1", "ending", "s", "b") == 1
        with pytest.raises(ValueError, match="unknown notification kind"):
            notifications.notify(uow.session, ids, "k:2", "gossip", "s", "b")
        uow.commit()
    assert len(inbox_of(centre, applicant)) == 1
    assert len(inbox_of(centre, centre.operator)) == 1


# -- the periodic check -----------------------------------------------------------------------


def test_each_low_balance_threshold_notifies_once(centre: Centre) -> None:
    allocation_id = award(centre, "HKU", gpu_hours=100)
    applicant = centre.applicants["HKU"]
    now = utcnow()
    notifications.check_due(centre.uow(), now, DEFAULTS)
    assert inbox_of(centre, applicant, "low_balance") == []

    use(centre, "HKU", allocation_id, gpus=8, seconds=33_750)  # 75 GPU-hours: exactly 25% left
    assert notifications.check_due(centre.uow(), now, DEFAULTS) == 1
    assert notifications.check_due(centre.uow(), now, DEFAULTS) == 0
    (note,) = inbox_of(centre, applicant, "low_balance")
    assert note.key == f"low_balance:{allocation_id}:25"
    assert note.link == f"/allocations/{allocation_id}"
    assert "25.0 of its 100 awarded H800 GPU-hours" in note.body

    use(centre, "HKU", allocation_id, gpus=8, seconds=2 * 3600)  # 16 more: 9% left
    assert notifications.check_due(centre.uow(), now, DEFAULTS) == 1
    assert notifications.check_due(centre.uow(), now, DEFAULTS) == 0
    keys = sorted(n.key for n in inbox_of(centre, applicant, "low_balance"))
    assert keys == [f"low_balance:{allocation_id}:10", f"low_balance:{allocation_id}:25"]


def test_a_balance_that_falls_past_both_thresholds_at_once_gets_both(centre: Centre) -> None:
    allocation_id = award(centre, "HKU", gpu_hours=10)
    use(centre, "HKU", allocation_id, gpus=8, seconds=4_320)  # 9.6 of 10 GPU-hours: 4% left
    assert notifications.check_due(centre.uow(), utcnow(), DEFAULTS) == 2
    keys = sorted(n.key for n in inbox_of(centre, centre.applicants["HKU"], "low_balance"))
    assert keys == [f"low_balance:{allocation_id}:10", f"low_balance:{allocation_id}:25"]
    # thresholds come from the settings: none configured, none sent
    other = award(centre, "CUHK", gpu_hours=10)
    use(centre, "CUHK", other, gpus=8, seconds=4_320)
    quiet = notifications.NotificationSettings((), 14, 7)
    assert notifications.check_due(centre.uow(), utcnow(), quiet) == 0


def test_an_award_ending_within_the_window_notifies_once(centre: Centre) -> None:
    allocation_id = award(centre, "HKU")
    applicant = centre.applicants["HKU"]
    ends_at = allocation_of(centre, allocation_id).ends_at
    last_day = (ends_at - timedelta(days=1)).date()

    notifications.check_due(centre.uow(), ends_at - timedelta(days=15), DEFAULTS)
    assert inbox_of(centre, applicant, "ending") == []
    notifications.check_due(centre.uow(), ends_at - timedelta(days=13), DEFAULTS)
    notifications.check_due(centre.uow(), ends_at - timedelta(days=2), DEFAULTS)
    (note,) = inbox_of(centre, applicant, "ending")
    assert note.key == f"ending:{allocation_id}"
    assert note.subject == f"Allocation {allocation_id} ends on {last_day.isoformat()}"
    assert note.link == f"/allocations/{allocation_id}"


def test_an_ended_or_closed_award_is_not_warned_about(centre: Centre) -> None:
    allocation_id = award(centre, "HKU")
    ends_at = allocation_of(centre, allocation_id).ends_at
    notifications.check_due(centre.uow(), ends_at + timedelta(hours=1), DEFAULTS)
    assert inbox_of(centre, centre.applicants["HKU"], "ending") == []

    closed_id = award(centre, "CUHK")
    allocations.close_allocation(centre.uow(), centre.operator, closed_id)
    ends_at = allocation_of(centre, closed_id).ends_at
    notifications.check_due(centre.uow(), ends_at - timedelta(days=2), DEFAULTS)
    assert inbox_of(centre, centre.applicants["CUHK"], "ending") == []


def test_the_invoice_for_last_month_is_announced_once_the_month_is_over(
    centre: Centre, smtp: SmtpServer
) -> None:
    allocation_id = award(centre, "HKU")
    applicant = centre.applicants["HKU"]
    charge = use(centre, "HKU", allocation_id, gpus=2, seconds=1800)  # one GPU-hour
    month = f"{charge.settled_at:%Y-%m}"
    notifications.check_due(centre.uow(), charge.settled_at + timedelta(minutes=1), DEFAULTS)
    assert inbox_of(centre, applicant, "invoice") == []

    next_month = first_of_next_month(charge.settled_at) + timedelta(hours=1)
    notifications.check_due(centre.uow(), next_month, DEFAULTS)
    notifications.check_due(centre.uow(), next_month + timedelta(days=1), DEFAULTS)
    (note,) = inbox_of(centre, applicant, "invoice")
    assert note.key == f"invoice:{centre.orgs['HKU']}:{month}"
    assert note.link == f"/invoices?month={month}"
    assert note.subject == f"Your invoice for {month} is ready"
    # an hour at HK$36 and the default 0.70 rate: HK$25.20 subsidy, HK$10.80 co-pay
    assert "charged HK$36.00" in note.body and "pays HK$10.80" in note.body

    # the month after has no jobs: no invoice to announce
    notifications.check_due(centre.uow(), first_of_next_month(next_month), DEFAULTS)
    assert len(inbox_of(centre, applicant, "invoice")) == 1
    assert notifications.send_pending(centre.uow(), smtp.mailer()) >= 1
    assert f"Your invoice for {month} is ready" in smtp.inbox.subjects()


def test_a_report_due_soon_or_overdue_is_reminded_once(centre: Centre) -> None:
    allocation_id = award(centre, "HKU")
    applicant = centre.applicants["HKU"]
    reports = progress.list_reports(centre.uow(), applicant, utcnow())
    first = reports[0].report
    due = datetime.combine(first.due_on, datetime.min.time(), UTC)

    notifications.check_due(centre.uow(), due - timedelta(days=8), DEFAULTS)
    assert inbox_of(centre, applicant, "report_due") == []
    notifications.check_due(centre.uow(), due - timedelta(days=6), DEFAULTS)
    notifications.check_due(centre.uow(), due + timedelta(days=3), DEFAULTS)  # overdue now
    mine = [n for n in inbox_of(centre, applicant, "report_due") if n.key.endswith(f":{first.id}")]
    (note,) = mine
    assert note.key == f"report_due:{first.id}"
    assert note.link == "/reports"
    assert f"allocation {allocation_id}" in note.subject

    # a report already overdue when first seen is reminded as overdue
    other_id = award(centre, "CUHK")
    (late, *_) = progress.list_reports(centre.uow(), centre.applicants["CUHK"], utcnow())
    late_due = datetime.combine(late.report.due_on, datetime.min.time(), UTC)
    notifications.check_due(centre.uow(), late_due + timedelta(days=2), DEFAULTS)
    (overdue,) = [
        n
        for n in inbox_of(centre, centre.applicants["CUHK"], "report_due")
        if n.key == f"report_due:{late.report.id}"
    ]
    assert overdue.subject.endswith("is overdue") and f"allocation {other_id}" in overdue.subject


def test_a_submitted_report_is_not_reminded(centre: Centre) -> None:
    award(centre, "HKU")
    applicant = centre.applicants["HKU"]
    (first, *_) = progress.list_reports(centre.uow(), applicant, utcnow())
    progress.submit_report(centre.uow(), applicant, first.report.id, "x" * 60, utcnow())
    due = datetime.combine(first.report.due_on, datetime.min.time(), UTC)
    notifications.check_due(centre.uow(), due - timedelta(days=1), DEFAULTS)
    keys = [n.key for n in inbox_of(centre, applicant, "report_due")]
    assert f"report_due:{first.report.id}" not in keys


def test_the_check_schedules_reports_for_awards_made_before_reports_existed(
    centre: Centre,
) -> None:
    allocation_id = award(centre, "HKU")
    with centre.uow() as uow:
        for report in uow.session.scalars(select(ProgressReport)):
            uow.session.delete(report)
        uow.commit()
    ends_at = allocation_of(centre, allocation_id).ends_at
    notifications.check_due(centre.uow(), ends_at - timedelta(days=3), DEFAULTS)
    keys = [n.key for n in inbox_of(centre, centre.applicants["HKU"], "report_due")]
    assert keys, "the final report, due in three days, is reminded"


# -- mailing ----------------------------------------------------------------------------------


def test_an_smtp_failure_leaves_the_message_pending_and_a_later_send_delivers_it_once(
    centre: Centre, smtp: SmtpServer
) -> None:
    award(centre, "HKU")
    smtp.stop()
    assert notifications.send_pending(centre.uow(), smtp.mailer()) == 0
    (note,) = inbox_of(centre, centre.applicants["HKU"])
    assert note.emailed_at is None
    assert note.email_attempts == 1
    assert "Connection" in note.email_error or "refused" in note.email_error.lower()

    smtp.start()
    assert notifications.send_pending(centre.uow(), smtp.mailer()) == 1
    assert notifications.send_pending(centre.uow(), smtp.mailer()) == 0
    assert len(smtp.inbox.messages) == 1
    (note,) = inbox_of(centre, centre.applicants["HKU"])
    assert note.emailed_at is not None and note.email_error == ""


def test_a_message_that_fails_five_times_is_no_longer_tried(
    centre: Centre, smtp: SmtpServer
) -> None:
    award(centre, "HKU")
    smtp.stop()
    for _ in range(notifications.MAX_EMAIL_ATTEMPTS + 1):
        notifications.send_pending(centre.uow(), smtp.mailer())
    (note,) = inbox_of(centre, centre.applicants["HKU"])
    assert note.email_attempts == notifications.MAX_EMAIL_ATTEMPTS
    smtp.start()
    assert notifications.send_pending(centre.uow(), smtp.mailer()) == 0
    assert smtp.inbox.messages == []
    # it stays in the portal
    assert notifications.unread_count(centre.uow(), centre.applicants["HKU"]) == 1


def test_a_refused_recipient_does_not_hold_up_the_rest(centre: Centre, smtp: SmtpServer) -> None:
    class Picky(Inbox):
        async def handle_RCPT(
            self, server: Any, session: Any, envelope: Any, address: str, options: Any
        ) -> str:
            if address.startswith("lead@hku"):
                return "550 no such mailbox"
            envelope.rcpt_tos.append(address)
            return "250 OK"

    smtp.stop()
    smtp.inbox = Picky()
    smtp.start()
    award(centre, "HKU")
    award(centre, "CUHK")
    assert notifications.send_pending(centre.uow(), smtp.mailer()) == 1
    assert [rcpt for rcpt, _ in smtp.inbox.messages] == [["lead@cuhk.test"]]
    (refused,) = inbox_of(centre, centre.applicants["HKU"])
    assert refused.email_attempts == 1 and "550" in refused.email_error


# -- reading ----------------------------------------------------------------------------------


def test_mark_read_one_or_all_and_never_another_users(centre: Centre) -> None:
    applicant = add_org(centre, "HKU")
    other = add_org(centre, "CUHK")
    with centre.uow() as uow:
        for i in range(3):
            notifications.notify(uow.session, [applicant.user_id], f"t:{i}", "ending", f"s{i}", "b")
        notifications.notify(uow.session, [other.user_id], "t:0", "ending", "theirs", "b")
        uow.commit()
    notes = inbox_of(centre, applicant)
    assert [n.subject for n in notes] == ["s2", "s1", "s0"]  # newest first
    assert len(notifications.list_notifications(centre.uow(), applicant, limit=2)) == 2

    notifications.mark_read(centre.uow(), applicant, notes[0].id)
    assert notifications.unread_count(centre.uow(), applicant) == 2
    unread = notifications.list_notifications(centre.uow(), applicant, unread_only=True)
    assert [n.subject for n in unread] == ["s1", "s0"]

    (theirs,) = inbox_of(centre, other)
    with pytest.raises(NotFound):
        notifications.mark_read(centre.uow(), applicant, theirs.id)
    with pytest.raises(NotFound):
        notifications.mark_read(centre.uow(), applicant, 999_999)
    notifications.mark_read(centre.uow(), applicant)
    assert notifications.unread_count(centre.uow(), applicant) == 0
    assert notifications.unread_count(centre.uow(), other) == 1
    assert inbox_of(centre, applicant)[0].read_at is not None


# -- settings and the runtime -----------------------------------------------------------------


def test_settings_build_the_mailer_and_the_thresholds() -> None:
    assert mailer_from_settings(Settings()) is None
    mailer = mailer_from_settings(
        Settings(smtp_host="mail.test", smtp_port=587, smtp_username="u", smtp_password="p")
    )
    assert isinstance(mailer, SmtpMailer)
    assert (mailer.host, mailer.port, mailer.username, mailer.password) == (
        "mail.test",
        587,
        "u",
        "p",
    )
    assert "secret-pass" not in repr(Settings(smtp_password="secret-pass"))
    assert notifications.notification_settings(Settings()) == DEFAULTS
    custom = Settings(notify_low_balance_percents=" 10, 50 ,5", notify_ending_days=3)
    assert notifications.notification_settings(custom).low_balance_percents == (50, 10, 5)
    for bad in ("0", "100", "ten", "25;10", "-5"):
        with pytest.raises(SettingsError, match="bad percentage"):
            Settings(notify_low_balance_percents=bad)


def test_the_runtime_checks_and_mails_on_its_own(runtime: Runtime, smtp: SmtpServer) -> None:
    runtime.settings = runtime.settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": smtp.port, "notify_interval_s": 0.2}
    )
    centre = build_centre(runtime.uow)
    allocation_id = award(centre, "HKU")
    result = runtime.run_notifications()
    assert (result.created, result.emailed) == (0, 1)  # the decision was already there

    ends_at = allocation_of(centre, allocation_id).ends_at
    result = runtime.run_notifications(now=ends_at - timedelta(days=1))
    assert result.created >= 2  # ending, and the final report's reminder
    assert result.emailed == result.created
    assert f"Allocation {allocation_id} ends on " in " ".join(smtp.inbox.subjects())

    # the controller's loop runs the same check by itself, every AISC_NOTIFY_INTERVAL_S
    award(centre, "CUHK")
    runtime.start_controller()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(
            rcpt == ["lead@cuhk.test"] for rcpt, _ in smtp.inbox.messages
        ):
            time.sleep(0.1)
    finally:
        runtime.stop_controller()
    assert any(rcpt == ["lead@cuhk.test"] for rcpt, _ in smtp.inbox.messages)
