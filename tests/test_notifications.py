"""Notifications: the e-mail a person receives, its calendar invitation, and sending it once.

Against the real PostgreSQL of the fixtures (people are inserted with SQL), a real folder, and a
real (tiny) SMTP server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email
import email.policy
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import asyncpg
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.email_message import fold, session_uid
from activities.notifications import MailFolderChannel, NotificationActivities, SmtpChannel
from devstack.postgres import free_port
from events.messages import NotificationReceipt, NotificationRequest, SessionDetails
from events.store import create_pool

MENTOR, MENTEE = "E1042", "E0007"
PAIR = "pair-digital-2030-E1042-E0007"
LONG_FORMAT = "individual, in the small meeting room on the third floor, next to the cafeteria"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, max_size=4)
    await pool.executemany(
        "INSERT INTO people (employee_id, display_name, email, time_zone) VALUES ($1, $2, $3, $4)",
        [(MENTOR, "Léa Martin", "lea.martin@example.com", "Europe/Paris"),
         (MENTEE, "Bernard Dupont", "bernard.dupont@example.com", "America/Montreal")])
    yield pool
    await pool.close()


def notice(notification_id: str, kind: str = "invitation", **fields) -> NotificationRequest:
    return NotificationRequest(notification_id=notification_id, pair_id=PAIR,
                               programme_id="digital-2030", kind=kind, recipient_id=MENTEE,
                               recipient_role="mentee", counterpart_id=MENTOR, **fields)


def session(**fields) -> SessionDetails:
    values = {"session_no": 2, "starts_at": datetime(2030, 5, 14, 14, 0, tzinfo=UTC),
              "duration_minutes": 45, "format": LONG_FORMAT, "topics": ["social networks"]}
    return SessionDetails(**(values | fields))


def read_eml(path: Path) -> EmailMessage:
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


def calendar_of(message: EmailMessage) -> tuple[bytes, dict[str, str]]:
    """The raw .ics bytes, and its properties once unfolded (name without parameters -> value)."""
    [part] = [p for p in message.iter_attachments() if p.get_content_type() == "text/calendar"]
    raw = part.get_payload(decode=True)
    unfolded = raw.decode("utf-8").replace("\r\n ", "")  # RFC 5545 3.1: CRLF + one space
    properties = {}
    for line in unfolded.split("\r\n"):
        if line:
            name, _, value = line.partition(":")
            properties.setdefault(name.split(";")[0], value)
    return raw, properties


async def test_an_invitation_is_one_readable_email_with_the_deadline_in_local_time(pool, tmp_path):
    acts = NotificationActivities(pool, MailFolderChannel(tmp_path))
    deadline = datetime(2030, 5, 3, 16, 0, tzinfo=UTC)  # 12:00 in Montreal (EDT)
    receipt = await ActivityEnvironment().run(
        acts.send_notification, notice("n-invite-1", deadline=deadline))

    assert receipt == NotificationReceipt(message_id="<n-invite-1@mentoring.invalid>", channel="outbox")
    [path] = tmp_path.iterdir()
    message = read_eml(path)
    assert message["To"].addresses[0].addr_spec == "bernard.dupont@example.com"
    assert message["To"].addresses[0].display_name == "Bernard Dupont"
    assert message["Subject"] == "An invitation to reverse mentoring"
    assert message["Message-ID"] == "<n-invite-1@mentoring.invalid>"
    assert message["Date"] and message["From"]
    body = message.get_body(("plain",)).get_content()
    assert "Hello Bernard Dupont" in body and "Léa Martin" in body
    assert "Friday 3 May 2030 at 12:00 EDT (America/Montreal)" in body
    assert b"\r\n" in path.read_bytes()  # RFC 5322 line endings
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


async def test_a_session_invitation_carries_a_valid_ics(pool, tmp_path):
    acts = NotificationActivities(pool, MailFolderChannel(tmp_path))
    receipt = await ActivityEnvironment().run(
        acts.send_notification, notice("n-session-1", "session_invitation", session=session(sequence=1)))

    message = read_eml(tmp_path / "n-session-1@mentoring.invalid.eml")
    assert message["Subject"] == "Session 2 has moved: Tuesday 14 May, 10:00"
    body = message.get_body(("plain",)).get_content()
    assert "Tuesday 14 May 2030 at 10:00 EDT (America/Montreal)" in body
    part = next(message.iter_attachments())
    assert part.get_content_type() == "text/calendar"
    assert part.get_param("method") == "REQUEST" and part.get_filename() == "session-2.ics"
    raw, ics = calendar_of(message)
    assert raw.startswith(b"BEGIN:VCALENDAR\r\n") and raw.endswith(b"END:VCALENDAR\r\n")
    lines = raw.split(b"\r\n")
    assert b"\n" not in raw.replace(b"\r\n", b""), "every line ends with CRLF"
    assert all(len(line) <= 75 for line in lines)
    assert any(line.startswith(b" ") for line in lines), "the long description was folded"
    assert ics["METHOD"] == "REQUEST" and ics["STATUS"] == "CONFIRMED"
    assert ics["UID"] == session_uid(PAIR, 2)
    assert (ics["DTSTART"], ics["DTEND"]) == ("20300514T140000Z", "20300514T144500Z")
    assert ics["SEQUENCE"] == "1"
    assert ics["VERSION"] == "2.0" and ics["PRODID"] and ics["DTSTAMP"].endswith("Z")
    assert "individual\\, in the small meeting room" in ics["DESCRIPTION"]  # escaped comma
    assert ics["ATTENDEE"] == "mailto:bernard.dupont@example.com"
    assert "Bernard" not in ics["SUMMARY"] and "Léa" not in ics["SUMMARY"]
    assert receipt.message_id == "<n-session-1@mentoring.invalid>"


async def test_a_cancelled_session_cancels_the_same_calendar_entry(pool, tmp_path):
    acts = NotificationActivities(pool, MailFolderChannel(tmp_path))
    run = ActivityEnvironment().run
    await run(acts.send_notification, notice("n-s2", "session_invitation", session=session()))
    await run(acts.send_notification, notice("n-s2-cancel", "session_cancelled",
                                             session=session(sequence=1, cancelled=True)))

    _, invited = calendar_of(read_eml(tmp_path / "n-s2@mentoring.invalid.eml"))
    cancellation = read_eml(tmp_path / "n-s2-cancel@mentoring.invalid.eml")
    _, cancelled = calendar_of(cancellation)
    assert next(cancellation.iter_attachments()).get_param("method") == "CANCEL"
    assert (cancelled["METHOD"], cancelled["STATUS"], cancelled["SEQUENCE"]) == ("CANCEL", "CANCELLED", "1")
    assert cancelled["UID"] == invited["UID"] != session_uid(PAIR, 3)
    assert "is cancelled" in cancellation["Subject"]


async def test_a_retried_notification_sends_nothing_twice(pool, tmp_path):
    acts = NotificationActivities(pool, MailFolderChannel(tmp_path))
    run = ActivityEnvironment().run
    first = await run(acts.send_notification, notice("n-repeat"))
    written = {p: p.read_bytes() for p in tmp_path.iterdir()}
    again = await run(acts.send_notification, notice("n-repeat"))

    assert again == NotificationReceipt(message_id=first.message_id, channel="outbox", already_sent=True)
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == written
    assert await pool.fetchval("SELECT count(*) FROM notifications_sent") == 1


def _attempt(number: int, started: datetime) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=number, started_time=started)
    return env


async def test_a_reminder_after_its_session_began_is_skipped_on_a_first_attempt_only(pool, tmp_path):
    """Too late on a first attempt: nothing sent, the receipt says why. On a retry the previous
    attempt may have delivered it before dying: deliver, rather than record a false 'not sent'."""
    acts = NotificationActivities(pool, MailFolderChannel(tmp_path))
    begun = session().starts_at + timedelta(minutes=1)
    reminder = notice("n-late", kind="session_reminder", session=session())

    first = await _attempt(1, begun).run(acts.send_notification, reminder)
    assert first == NotificationReceipt(message_id="", channel="", skipped="SessionAlreadyStarted")
    assert not list(tmp_path.iterdir())
    assert await pool.fetchval("SELECT count(*) FROM notifications_sent") == 0

    retried = await _attempt(2, begun).run(acts.send_notification, notice(
        "n-late-retry", kind="session_reminder", session=session()))
    assert retried.skipped is None and retried.channel == "outbox"
    early = await _attempt(1, begun - timedelta(hours=1)).run(acts.send_notification, notice(
        "n-on-time", kind="session_reminder", session=session()))
    assert early.skipped is None
    assert len(list(tmp_path.iterdir())) == 2


@pytest.mark.parametrize("recipient", ["erased", "unknown"])
async def test_an_erased_or_unknown_recipient_is_a_final_error_without_personal_data(
        pool, tmp_path, recipient):
    await pool.execute("UPDATE people SET display_name = NULL, email = NULL, erased_at = now() "
                       "WHERE employee_id = $1", MENTEE)
    acts = NotificationActivities(pool, MailFolderChannel(tmp_path))
    request = notice("n-erased") if recipient == "erased" else \
        notice("n-unknown").model_copy(update={"recipient_id": "E9999"})
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(acts.send_notification, request)

    assert (raised.value.type, raised.value.non_retryable) == ("RecipientUnavailable", True)
    assert request.recipient_id in raised.value.message
    assert "@" not in raised.value.message and "Dupont" not in raised.value.message
    assert not list(tmp_path.iterdir())


async def test_a_stored_name_with_a_line_break_adds_no_header(pool, tmp_path):
    """Rows stored before names were checked: the header API quotes the name, so a line break in
    it cannot add a recipient."""
    await pool.execute("UPDATE people SET display_name = $2 WHERE employee_id = $1", MENTEE,
                       "Bernard\r\nBcc: spy@example.org")
    acts = NotificationActivities(pool, MailFolderChannel(tmp_path))
    await ActivityEnvironment().run(acts.send_notification, notice("n-header"))
    [path] = tmp_path.iterdir()
    message = read_eml(path)
    assert message["Bcc"] is None and message["Cc"] is None
    assert [a.addr_spec for a in message["To"].addresses] == ["bernard.dupont@example.com"]


async def test_a_stored_address_that_is_not_one_is_a_final_error(pool, tmp_path):
    await pool.execute("UPDATE people SET email = 'not an address' WHERE employee_id = $1", MENTEE)
    acts = NotificationActivities(pool, MailFolderChannel(tmp_path))
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(acts.send_notification, notice("n-bad-address"))
    assert (raised.value.type, raised.value.non_retryable) == ("RecipientUnavailable", True)
    assert "not an address" not in raised.value.message and "mentoring people update" in raised.value.message


async def test_an_erased_counterpart_is_named_by_role(pool, tmp_path):
    await pool.execute("UPDATE people SET display_name = NULL, email = NULL, erased_at = now() "
                       "WHERE employee_id = $1", MENTOR)
    acts = NotificationActivities(pool, MailFolderChannel(tmp_path))
    await ActivityEnvironment().run(acts.send_notification, notice("n-nudge", "nudge"))
    body = read_eml(tmp_path / "n-nudge@mentoring.invalid.eml").get_body(("plain",)).get_content()
    assert "your mentor" in body and "Léa" not in body


async def test_an_unknown_kind_gets_a_generic_notice(pool, tmp_path):
    acts = NotificationActivities(pool, MailFolderChannel(tmp_path))
    await ActivityEnvironment().run(acts.send_notification, notice("n-new", "something_new"))
    message = read_eml(tmp_path / "n-new@mentoring.invalid.eml")
    assert message["Subject"] == "News from your reverse mentoring programme"


def test_folding_never_cuts_a_character_and_unfolds_back():
    line = "DESCRIPTION:" + "é" * 60 + "x" * 50
    folded = fold(line).encode("utf-8")
    pieces = folded.split(b"\r\n")
    assert len(pieces) > 1 and all(len(p) <= 75 for p in pieces)
    assert all(p.startswith(b" ") for p in pieces[1:])
    for piece in pieces:
        piece.decode("utf-8")  # each physical line is whole UTF-8
    assert folded.decode("utf-8").replace("\r\n ", "") == line


# --- a real SMTP server, just enough of RFC 5321 to receive one message -------------------------

class SmtpSink:
    def __init__(self, rcpt_reply: str = "250 ok") -> None:
        self.rcpt_reply = rcpt_reply
        self.envelopes: list[tuple[str, list[str], bytes]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def reply(text: str) -> None:
            writer.write(text.encode() + b"\r\n")
            await writer.drain()

        await reply("220 sink ready")
        sender, recipients = "", []
        while line := await reader.readline():
            command = line.decode().strip()
            verb = command[:4].upper()
            if verb == "EHLO":
                await reply("250-sink\r\n250 8BITMIME")
            elif verb == "MAIL":
                sender, recipients = command[10:], []
                await reply("250 ok")
            elif verb == "RCPT":
                recipients.append(command[8:])
                await reply(self.rcpt_reply)
            elif verb == "DATA":
                await reply("354 go ahead")
                data = b""
                while (chunk := await reader.readline()) != b".\r\n":
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                self.envelopes.append((sender, recipients, data))
                await reply("250 queued")
            elif verb == "QUIT":
                await reply("221 bye")
                break
            else:
                await reply("250 ok")
        writer.close()


@contextlib.asynccontextmanager
async def smtp_server(sink: SmtpSink) -> AsyncIterator[int]:
    server = await asyncio.start_server(sink.handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def smtp_activities(pool: asyncpg.Pool, port: int) -> NotificationActivities:
    channel = SmtpChannel("127.0.0.1", port, from_address="Mentoring <hr@example.org>",
                          starttls=False)
    return NotificationActivities(pool, channel, sender="Mentoring <hr@example.org>")


async def test_the_smtp_channel_delivers_to_a_real_server(pool):
    sink = SmtpSink()
    async with smtp_server(sink) as port:
        receipt = await ActivityEnvironment().run(
            smtp_activities(pool, port).send_notification,
            notice("n-smtp", "session_reminder", session=session()))

    assert receipt == NotificationReceipt(message_id="<n-smtp@mentoring.invalid>", channel="smtp")
    [(sender, recipients, data)] = sink.envelopes
    assert sender == "<hr@example.org>" and recipients == ["<bernard.dupont@example.com>"]
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert message["Message-ID"] == "<n-smtp@mentoring.invalid>"
    assert message["Subject"] == "Reminder: session 2, Tuesday 14 May, 10:00"
    assert calendar_of(message)[1]["METHOD"] == "REQUEST"


async def test_a_recipient_refused_for_good_is_final_and_names_no_address(pool):
    async with smtp_server(SmtpSink(rcpt_reply="550 5.1.1 <bernard.dupont@example.com> unknown")) as port:
        with pytest.raises(ApplicationError) as raised:
            await ActivityEnvironment().run(smtp_activities(pool, port).send_notification,
                                            notice("n-refused"))
    assert (raised.value.type, raised.value.non_retryable) == ("DeliveryRefused", True)
    assert "SMTP 550" in raised.value.message and "@" not in raised.value.message
    assert await pool.fetchval("SELECT count(*) FROM notifications_sent") == 0


async def test_an_unreachable_mail_server_is_retried(pool):
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(smtp_activities(pool, free_port()).send_notification,
                                        notice("n-down"))
    assert (raised.value.type, raised.value.non_retryable) == ("DeliveryFailed", False)
    assert await pool.fetchval("SELECT count(*) FROM notifications_sent") == 0
