"""Sending one notice to one person: the `send_notification` activity and its channels.

The workflow decides what to say to whom (a `NotificationRequest` with pseudonymous ids); this
activity looks the person up in `people`, builds the e-mail (activities/email_message.py) and hands
it to a channel:
  * `MailFolderChannel` writes RFC 5322 `.eml` files into a folder (the default: the outbox);
  * `SmtpChannel` sends through a mail server with the standard library's smtplib.
Names, addresses and bodies are never logged: only the notification id, kind and recipient id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import smtplib
import ssl
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from email.errors import MessageError
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import SMTP
from email.utils import parseaddr
from pathlib import Path
from typing import Protocol

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.email_message import Recipient, build_message
from events.messages import (
    DELIVERY_FAILED,
    DELIVERY_REFUSED,
    RECIPIENT_UNAVAILABLE,
    SESSION_ALREADY_STARTED,
    NotificationReceipt,
    NotificationRequest,
)

DEFAULT_SENDER = "Reverse mentoring <mentoring@example.invalid>"


class NotificationChannel(Protocol):
    """Where e-mails go. `deliver` returns the channel's name, recorded in the receipt."""

    async def deliver(self, message: EmailMessage) -> str: ...


class DeliveryRefused(Exception):
    """A channel's final refusal; the message must hold no address (it reaches the Temporal UI)."""


class MailFolderChannel:
    """Writes each message as `<message id>.eml` into a folder: a local outbox to read, or for a
    mail agent to pick up. Write-then-rename, so a reader never sees half a message, and a retry
    rewrites the same file: exactly one file per notification."""

    name = "outbox"

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    async def deliver(self, message: EmailMessage) -> str:
        await asyncio.to_thread(self._write, message)
        return self.name

    def _write(self, message: EmailMessage) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)  # e-mails are personal data
        target = self.folder / eml_file_name(message["Message-ID"])
        # mkstemp creates the file readable by its owner only; the dot keeps it out of sight.
        handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(message.as_bytes(policy=SMTP))  # RFC 5322: CRLF line endings
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


@dataclass(frozen=True)
class OutboxErasure:
    deleted: int
    rewritten: int


def forget_in_outbox(folder: Path, email: str | None, name: str | None) -> OutboxErasure:
    """An erased person leaves the outbox too: messages to them are deleted; in messages to
    others (where they are the counterpart, named in the text) their name becomes "(erased)".
    Each file is rewritten whole, then renamed over the old one, as the channel writes them."""
    deleted = rewritten = 0
    if not folder.is_dir() or not (email or name):
        return OutboxErasure(0, 0)
    address = (email or "").casefold()
    for path in sorted(folder.glob("*.eml")):
        message = BytesParser(policy=SMTP).parsebytes(path.read_bytes())
        recipients = [a.addr_spec.casefold() for a in message["To"].addresses] if message["To"] else []
        if address and address in recipients:
            path.unlink()
            deleted += 1
            continue
        changed = False
        for part in message.walk():
            if name and part.get_content_type() == "text/plain" and not part.is_attachment():
                text = part.get_content()
                if name in text:
                    part.set_content(text.replace(name, "(erased)"), cte="quoted-printable")
                    changed = True
        if changed:
            handle, temporary = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
            with os.fdopen(handle, "wb") as file:
                file.write(message.as_bytes(policy=SMTP))
            os.replace(temporary, path)
            rewritten += 1
    return OutboxErasure(deleted, rewritten)


def eml_file_name(message_id: str) -> str:
    """`<abc@mentoring.invalid>` -> `abc@mentoring.invalid.eml`; anything that could leave the
    folder or trouble a file system is replaced."""
    stem = re.sub(r"[^A-Za-z0-9._@-]", "_", (message_id or "").strip().strip("<>"))
    return f"{stem.lstrip('.') or 'message'}.eml"


class SmtpChannel:
    """Sends through an SMTP server (port 587 with STARTTLS by default). smtplib blocks, so it
    runs in a thread: no extra dependency for one connection per notice."""

    name = "smtp"

    def __init__(self, host: str, port: int = 587, username: str | None = None,
                 password: str | None = None, from_address: str = DEFAULT_SENDER,
                 starttls: bool = True, timeout: float = 10.0) -> None:
        self.host, self.port, self.starttls, self.timeout = host, port, starttls, timeout
        self._username, self._password = username, password
        self._envelope_from = parseaddr(from_address)[1]

    async def deliver(self, message: EmailMessage) -> str:
        await asyncio.to_thread(self._send, message)
        return self.name

    def _send(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as server:
            if self.starttls:
                server.starttls(context=ssl.create_default_context())
            if self._username:
                server.login(self._username, self._password or "")
            try:
                server.send_message(message, from_addr=self._envelope_from)
            except smtplib.SMTPRecipientsRefused as exc:
                codes = sorted({code for code, _ in exc.recipients.values()})
                if all(code >= 500 for code in codes):  # 4xx is "try later": left to retries
                    raise DeliveryRefused(
                        f"the mail server refused the recipient (SMTP {codes[0]})") from None
                raise


_FIND_SENT = "SELECT message_id, channel FROM notifications_sent WHERE notification_id = $1"
_RECORD_SENT = """
INSERT INTO notifications_sent (notification_id, message_id, channel) VALUES ($1, $2, $3)
ON CONFLICT (notification_id) DO NOTHING
"""
_FIND_PEOPLE = """
SELECT employee_id, display_name, email, time_zone FROM people
 WHERE employee_id = ANY($1::text[]) AND erased_at IS NULL
"""


class NotificationActivities:
    """Register `NotificationActivities(pool, channel, sender=...).send_notification`."""

    def __init__(self, pool: asyncpg.Pool, channel: NotificationChannel, *,
                 sender: str = DEFAULT_SENDER) -> None:
        self._pool, self._channel, self._sender = pool, channel, sender

    @activity.defn(name="send_notification")
    async def send_notification(self, request: NotificationRequest) -> NotificationReceipt:
        sent = await self._pool.fetchrow(_FIND_SENT, request.notification_id)
        if sent is not None:
            _log("already sent (retry): nothing sent again", request)
            return NotificationReceipt(message_id=sent["message_id"], channel=sent["channel"],
                                       already_sent=True)
        if _too_late(request):
            # Decided here, by the activity's clock, and kept in the workflow's history as this
            # result: a workflow must not take such a decision from its own clock.
            _log("skipped: the session has already begun", request)
            return NotificationReceipt(message_id="", channel="", skipped=SESSION_ALREADY_STARTED)
        recipient, counterpart_name = await self._people(request)
        try:
            message = build_message(request, recipient, counterpart_name, sender=self._sender,
                                    now=datetime.now(UTC))
        except (ValueError, IndexError, MessageError):  # the header API refuses them: cannot heal
            raise ApplicationError(
                f"cannot send the {request.kind} notice to {request.recipient_id}: their stored "
                "contact details do not make a valid e-mail header. Correct them with "
                "`mentoring people update`.", type=RECIPIENT_UNAVAILABLE, non_retryable=True) from None
        channel = await self._deliver(request, message)
        # A crash between delivering and this insert makes the retry deliver again: at least
        # once over SMTP; the folder channel rewrites the same file, so exactly once there.
        await self._pool.execute(_RECORD_SENT, request.notification_id, message["Message-ID"],
                                 channel)
        _log(f"sent by {channel}", request)
        return NotificationReceipt(message_id=message["Message-ID"], channel=channel)

    async def _people(self, request: NotificationRequest) -> tuple[Recipient, str | None]:
        """The recipient's contact details, and the counterpart's name (which they already know)."""
        ids = [request.recipient_id] + ([request.counterpart_id] if request.counterpart_id else [])
        rows = {row["employee_id"]: row for row in await self._pool.fetch(_FIND_PEOPLE, ids)}
        row = rows.get(request.recipient_id)
        if row is None or not row["email"]:
            # Only the pseudonymous id: this message is shown in the Temporal UI and history.
            raise ApplicationError(
                f"cannot send the {request.kind} notice to {request.recipient_id}: this person is "
                "unknown or their personal data was erased, so there is no e-mail address. "
                "Register their contact details again if they should still be reached.",
                type=RECIPIENT_UNAVAILABLE, non_retryable=True)
        counterpart = rows.get(request.counterpart_id) if request.counterpart_id else None
        recipient = Recipient(row["employee_id"], row["display_name"], row["email"], row["time_zone"])
        return recipient, counterpart["display_name"] if counterpart else None

    async def _deliver(self, request: NotificationRequest, message: EmailMessage) -> str:
        """Deliver, turning a channel's errors into messages that carry no address nor path
        (server answers and file errors can hold both)."""
        try:
            return await self._channel.deliver(message)
        except DeliveryRefused as exc:
            raise ApplicationError(f"notification {request.notification_id} to "
                                   f"{request.recipient_id}: {exc}",
                                   type=DELIVERY_REFUSED, non_retryable=True) from None
        except OSError as exc:  # smtplib's errors are OSErrors too
            raise ApplicationError(f"notification {request.notification_id} could not be delivered "
                                   f"({_reason(exc)}); it will be retried",
                                   type=DELIVERY_FAILED) from None


def _too_late(request: NotificationRequest) -> bool:
    """A session reminder handled once its session has begun (its timer fired while no worker
    was alive, say) reminds nobody of anything. Temporal's clock: the one session times were
    checked against when they were proposed.

    Decided on the first attempt only: a retry may follow an attempt that delivered the e-mail
    and died before recording it, and a late reminder is better than a log saying "not sent"
    about an e-mail that was."""
    info = activity.info()
    return (request.kind == "session_reminder" and request.session is not None
            and info.attempt == 1 and info.started_time >= request.session.starts_at)


def _reason(exc: OSError) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"SMTP {exc.smtp_code}"
    return exc.strerror or type(exc).__name__


def _log(what: str, request: NotificationRequest) -> None:
    activity.logger.info("notification %s (%s) to %s: %s", request.notification_id, request.kind,
                         request.recipient_id, what)
