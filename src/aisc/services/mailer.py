"""Sending email. The outbox (services.notifications) decides what to send; this only sends it."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from typing import Protocol

from aisc.config import Settings


class Mailer(Protocol):
    def send(self, to: str, subject: str, body: str) -> None:
        """Deliver one plain-text message or raise (smtplib.SMTPException, OSError, ...)."""


class SmtpMailer:
    """One SMTP connection per message: notifications are few, and a dropped connection
    between two of them then costs nothing."""

    def __init__(
        self,
        host: str,
        port: int = 25,
        sender: str = "aisc@localhost",
        starttls: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.starttls = starttls
        self.username = username
        self.password = password
        self.timeout_s = timeout_s

    def send(self, to: str, subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(message)

    def __repr__(self) -> str:  # never the password
        return f"SmtpMailer({self.host!r}, {self.port}, sender={self.sender!r})"


def mailer_from_settings(settings: Settings) -> Mailer | None:
    """None when no SMTP host is configured: notifications then show only in the portal."""
    if not settings.smtp_host or not settings.smtp_host.strip():
        return None
    password = settings.smtp_password
    return SmtpMailer(
        host=settings.smtp_host.strip(),
        port=settings.smtp_port,
        sender=settings.smtp_sender,
        starttls=settings.smtp_starttls,
        username=settings.smtp_username or None,
        password=password.get_secret_value() if password is not None else None,
    )
