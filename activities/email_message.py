"""The e-mail one person receives: a short text per kind of notice, written for them, and for a
session an iCalendar invitation (RFC 5545) their calendar can add, move or cancel.

Pure functions, no I/O: `activities/notifications.py` looks the person up and delivers.
Times are shown in the recipient's own time zone; calendar times are in UTC, which every
calendar converts itself.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from zoneinfo import ZoneInfo

from events.messages import NotificationRequest, SessionDetails
from workflows.timezones import zone

MESSAGE_DOMAIN = "mentoring.invalid"
PRODID = "-//Reverse mentoring//Notifications 1.0//EN"
# Session UIDs are uuid5 names under this namespace: stable per pair and session number, so a
# reschedule or a cancellation updates the very entry the first invitation created.
_SESSION_UID_NAMESPACE = uuid.UUID("5b0c7f64-5d1e-4a43-9a59-2f4b1d0d6a11")
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")


@dataclass(frozen=True)
class Recipient:
    """Contact details read from `people` for one send, never logged."""

    employee_id: str
    display_name: str | None
    email: str
    time_zone: str


def message_id_for(notification_id: str) -> str:
    """The Message-ID, derived from the notification id so every retry builds the same one."""
    token = notification_id if _SAFE_ID.fullmatch(notification_id) else \
        hashlib.sha256(notification_id.encode()).hexdigest()[:32]
    return f"<{token}@{MESSAGE_DOMAIN}>"


def build_message(request: NotificationRequest, recipient: Recipient, counterpart_name: str | None,
                  *, sender: str, now: datetime) -> EmailMessage:
    letter = Letter(request, _one_line(recipient.display_name), _one_line(counterpart_name),
                    zone_named(recipient.time_zone))
    subject, body = compose(letter)
    message = EmailMessage()
    message["From"] = sender
    # Built by the standard library's header API, which quotes the name and refuses an address
    # that is not one: nothing typed can add a header or a recipient.
    message["To"] = Address(display_name=letter.name or "", addr_spec=_one_line(recipient.email) or "")
    message["Subject"] = subject
    message["Date"] = format_datetime(now.astimezone(UTC))
    message["Message-ID"] = message_id_for(request.notification_id)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: keeps out-of-office replies away
    # Quoted-printable keeps the message 7-bit clean for any mail server, accents included.
    message.set_content(body, cte="quoted-printable")
    if request.session is not None:
        _attach_calendar(message, request, request.session, recipient.email, sender, now)
    return message


def _attach_calendar(message: EmailMessage, request: NotificationRequest, session: SessionDetails,
                     attendee: str, sender: str, now: datetime) -> None:
    method = "CANCEL" if session.cancelled else "REQUEST"
    ics = session_calendar(pair_id=request.pair_id, session=session, organizer=sender,
                           attendee=attendee, now=now)
    # As bytes (base64): the CRLF line endings RFC 5545 requires reach the calendar untouched.
    message.add_attachment(ics, maintype="text", subtype="calendar",
                           filename=f"session-{session.session_no}.ics",
                           params={"method": method, "charset": "utf-8"})


# --- the texts --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Letter:
    """What a text needs: the request, the names the recipient already knows, their time zone."""

    request: NotificationRequest
    name: str | None
    counterpart_name: str | None
    zone: ZoneInfo

    @property
    def counterpart(self) -> str:
        if self.counterpart_name:
            return self.counterpart_name
        return {"mentor": "your mentee", "mentee": "your mentor"}.get(
            self.request.recipient_role, "your partner in the programme")

    @property
    def by_deadline(self) -> str:
        deadline = self.request.deadline
        return f"by {local_time(deadline, self.zone)}" if deadline else "soon"

    @property
    def session(self) -> SessionDetails:
        session = self.request.session
        if session is None:
            raise ValueError(f"a {self.request.kind} notice needs the session it is about, "
                             "and the request names none")
        return session

    @property
    def when(self) -> str:
        return local_time(self.session.starts_at, self.zone)

    @property
    def day(self) -> str:
        """The short form for subjects, which stay on one header line: 'Tuesday 14 May, 10:00'."""
        local = _aware(self.session.starts_at).astimezone(self.zone)
        return f"{_DAYS[local.weekday()]} {local.day} {_MONTHS[local.month - 1]}, {local:%H:%M}"

    @property
    def session_facts(self) -> str:
        topics = ", ".join(self.session.topics) or "to be agreed together"
        return (f"It lasts {self.session.duration_minutes} minutes ({self.session.format} session).\n"
                f"Topics: {topics}.")


def compose(letter: Letter) -> tuple[str, str]:
    """Subject and body; an unknown kind gets a generic notice rather than an error."""
    subject, text = _TEXTS.get(letter.request.kind, _generic)(letter)
    greeting = f"Hello {letter.name}," if letter.name else "Hello,"
    footer = ("The reverse mentoring team\n\n"
              "This message was sent automatically; please do not reply to it. For any question, "
              "your HR programme manager is there to help.")
    return subject, f"{greeting}\n\n{text}\n\n{footer}\n"


def _invitation(x: Letter) -> tuple[str, str]:
    return "An invitation to reverse mentoring", (
        f"We would like to pair you with {x.counterpart}, a colleague at ease with digital tools, "
        "in the company's reverse mentoring programme: a few sessions at times that suit your "
        "agenda, on the digital uses you choose.\n\n"
        f"Taking part is entirely your choice. Please let your HR programme manager know "
        f"{x.by_deadline} whether you accept. Declining is perfectly fine, and nothing more will "
        "be asked of you.")


def _invitation_reminder(x: Letter) -> tuple[str, str]:
    return "Reminder: your invitation to reverse mentoring", (
        f"A gentle reminder: you are invited to the reverse mentoring programme with "
        f"{x.counterpart}. Please tell your HR programme manager {x.by_deadline} whether you would "
        "like to take part. If we hear nothing, the invitation simply lapses: there is no obligation.")


def _motivation_request(x: Letter) -> tuple[str, str]:
    return "You have been nominated as a reverse mentor", (
        f"HR has nominated you to mentor {x.counterpart} in the reverse mentoring programme: you "
        "would share your everyday digital know-how with a senior colleague, over a few sessions.\n\n"
        f"Nothing starts without your own yes. Please confirm {x.by_deadline} that you want to do "
        "it, or decline: either answer is fine.")


def _motivation_reminder(x: Letter) -> tuple[str, str]:
    return "Reminder: your nomination as a reverse mentor", (
        f"A gentle reminder: you were nominated to mentor {x.counterpart}. Please confirm "
        f"{x.by_deadline} whether you want to do it. Without an answer, the nomination lapses.")


def _preparation_started(x: Letter) -> tuple[str, str]:
    return "Preparing your mentoring", (
        f"Thank you for taking this on! Before your first session with {x.counterpart}, three "
        "steps make you ready: agree the topics and objectives you will cover, complete the "
        "training modules, and HR signs you off.")


def _onboarding(x: Letter) -> tuple[str, str]:
    return "What to expect from reverse mentoring", (
        f"Thank you for accepting. You will meet {x.counterpart} for a few sessions, each "
        "centred on uses you pick.\n\n"
        "Ground rules: it is your time, and no question is too basic. What is said in a session "
        "stays between the two of you: HR only sees facts such as dates and ratings. You can "
        "pause or withdraw at any time, without penalty.")


def _preparation_reminder(x: Letter) -> tuple[str, str]:
    if x.request.recipient_role == "mentee":
        return "Reminder: your onboarding", (
            "Your onboarding for reverse mentoring is still open. Please get in touch with your "
            f"HR programme manager to go through what to expect before meeting {x.counterpart}.")
    return "Reminder: finish preparing your mentoring", (
        "Your preparation is not finished yet: the topics and objectives, the training modules "
        f"and HR's sign-off are needed before your first session with {x.counterpart}.")


def _escalation(x: Letter) -> tuple[str, str]:
    r = x.request
    stalled = "its preparation has stalled" if r.kind == "preparation_escalation" else \
        "nothing has happened for too long"
    return f"Mentoring pair {r.pair_id} needs your attention", (
        f"The mentoring pair {r.pair_id} in programme {r.programme_id} is flagged at risk: "
        f"{stalled}. A word with the mentor and the mentee may help them move on; if nothing "
        "happens, the pair will be closed as lapsed.")


def _sessions_open(x: Letter) -> tuple[str, str]:
    return "You can now plan your sessions", (
        f"Preparation is complete: {x.counterpart} and you can now plan your sessions. Propose "
        "the first one at a time that fits the senior's agenda.")


def _session_invitation(x: Letter) -> tuple[str, str]:
    n = x.session.session_no
    if x.request.kind == "session_rescheduled" or x.session.sequence > 0:
        return f"Session {n} has moved: {x.day}", (
            f"Session {n} with {x.counterpart} has a new time: {x.when}.\n{x.session_facts}\n\n"
            "The attached invitation updates your calendar.")
    return f"Session {n} planned: {x.day}", (
        f"Session {n} with {x.counterpart} is planned for {x.when}.\n{x.session_facts}\n\n"
        "The attached invitation adds it to your calendar. If the time no longer suits you, "
        "ask for it to be moved: rescheduling is easy.")


def _session_reminder(x: Letter) -> tuple[str, str]:
    n = x.session.session_no
    return f"Reminder: session {n}, {x.day}", (
        f"A reminder: your session {n} with {x.counterpart} is on {x.when}.\n{x.session_facts}")


def _session_cancelled(x: Letter) -> tuple[str, str]:
    n = x.session.session_no
    return f"Session {n} is cancelled", (
        f"Session {n} with {x.counterpart}, planned for {x.when}, is cancelled. The attached "
        "cancellation removes it from your calendar.")


def _group_session_invitation(x: Letter) -> tuple[str, str]:
    n = x.session.session_no
    return f"Collective session {n}: {x.day}", (
        f"You are invited to collective session {n} of the reverse mentoring programme, on "
        f"{x.when}.\n{x.session_facts}\n\nThe attached invitation adds it to your calendar.")


def _group_session_cancelled(x: Letter) -> tuple[str, str]:
    n = x.session.session_no
    return f"Collective session {n} is cancelled", (
        f"Collective session {n}, planned for {x.when}, is cancelled. The attached cancellation "
        "removes it from your calendar.")


def _programme_digest(x: Letter) -> tuple[str, str]:
    figures = "\n".join(f"- {line.replace('**', '')}" for line in x.request.summary) or "- nothing new"
    return f"Your programme this week: {x.request.programme_id}", (
        f"Where programme {x.request.programme_id} stands:\n\n{figures}\n\n"
        "The programme's workflow in the Temporal UI shows the same at any time.")


def _nudge(x: Letter) -> tuple[str, str]:
    return "Shall we plan your next session?", (
        f"It has been a while since anything happened in your mentoring with {x.counterpart}. "
        "A short session is enough to keep going: propose a time that fits, or ask HR for a "
        "pause if now is not the moment.")


def _feedback_request(x: Letter) -> tuple[str, str]:
    return "How was your session?", (
        f"Thank you for your session with {x.counterpart}. Please rate it from 1 to 5, say "
        "whether it was engaging and which topics you covered. A comment, if you add one, stays "
        "private to the two of you unless you choose to share it.")


def _final_evaluation_request(x: Letter) -> tuple[str, str]:
    return "Your final evaluation", (
        f"Your sessions with {x.counterpart} are over: thank you! Please share your overall "
        f"evaluation {x.by_deadline}. It is welcome, never compulsory, and comments stay private "
        "unless you choose to share them.")


def _follow_up(x: Letter) -> tuple[str, str]:
    question = (f"Do you see {x.counterpart} still using what you shared?"
                if x.request.recipient_role == "mentor" else "Are you still using what you learnt?")
    return "A quick question about your mentoring", (
        f"Some time has passed since your reverse mentoring with {x.counterpart}. {question} "
        "A short answer to your HR programme manager helps make the programme better.")


def _ended(x: Letter) -> tuple[str, str]:
    how = {"withdrawn": "has been withdrawn", "completed": "is complete"}.get(
        x.request.kind, "has come to an end")
    return "Your reverse mentoring has ended", (
        f"Your reverse mentoring with {x.counterpart} {how}. Thank you for your time. Any "
        "session still planned is cancelled, and nothing more is needed from you.")


def _generic(x: Letter) -> tuple[str, str]:
    deadline = f" Please answer {x.by_deadline}." if x.request.deadline else ""
    return "News from your reverse mentoring programme", (
        f"There is news about your reverse mentoring with {x.counterpart}: your HR programme "
        f"manager can tell you more.{deadline}")


# The kinds the pair workflow sends, and the names the design uses for the same notices.
_TEXTS: dict[str, Callable[[Letter], tuple[str, str]]] = {
    "invitation": _invitation,
    "invitation_reminder": _invitation_reminder,
    "motivation_request": _motivation_request,
    "mentor_motivation_request": _motivation_request,
    "motivation_reminder": _motivation_reminder,
    "preparation_started": _preparation_started,
    "mentee_onboarding": _onboarding,
    "onboarding": _onboarding,
    "preparation_reminder": _preparation_reminder,
    "escalation": _escalation,
    "preparation_escalation": _escalation,
    "at_risk_escalation": _escalation,
    "sessions_open": _sessions_open,
    "session_invitation": _session_invitation,
    "session_rescheduled": _session_invitation,
    "session_reminder": _session_reminder,
    "session_cancelled": _session_cancelled,
    "nudge": _nudge,
    "feedback_request": _feedback_request,
    "final_evaluation_request": _final_evaluation_request,
    "follow_up": _follow_up,
    "group_session_invitation": _group_session_invitation,
    "group_session_cancelled": _group_session_cancelled,
    "programme_digest": _programme_digest,
    "pair_closed": _ended,
    "withdrawn": _ended,
    "completed": _ended,
}


# --- times --------------------------------------------------------------------------------------

def zone_named(name: str | None) -> ZoneInfo:
    """The person's zone, from the same tz data the workflow judged the session with; UTC when
    the stored name is empty or unknown (better than no e-mail)."""
    found = zone(name or "UTC") or zone("UTC")
    if found is None:
        raise LookupError("the tz database has no UTC zone: is the tzdata package installed?")
    return found


def local_time(moment: datetime, zone: ZoneInfo) -> str:
    """'Friday 3 May 2030 at 18:00 CEST (Europe/Paris)': English names, whatever the locale."""
    local = _aware(moment).astimezone(zone)
    text = (f"{_DAYS[local.weekday()]} {local.day} {_MONTHS[local.month - 1]} {local.year} "
            f"at {local:%H:%M} {local.tzname()}")
    return text if local.tzname() == zone.key else f"{text} ({zone.key})"


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _one_line(value: str | None) -> str | None:
    """Header-safe: whitespace (line breaks included) collapsed, so no header can be injected."""
    return " ".join(value.split()) if value else None


# --- iCalendar (RFC 5545, with the iTIP methods of RFC 5546) ------------------------------------

def session_uid(pair_id: str, session_no: int) -> str:
    return f"{uuid.uuid5(_SESSION_UID_NAMESPACE, f'{pair_id}/{session_no}')}@{MESSAGE_DOMAIN}"


def session_calendar(*, pair_id: str, session: SessionDetails, organizer: str, attendee: str,
                     now: datetime) -> bytes:
    """One VEVENT: METHOD:REQUEST adds or updates it (higher SEQUENCE wins), CANCEL removes it.

    The summary says no more than the recipient knows; topics stay in the e-mail, because
    calendars are often shared with assistants and colleagues.
    """
    start = _aware(session.starts_at)
    cancelled = session.cancelled
    organizer_name, organizer_address = parseaddr(organizer)
    group = session.format == "group"
    title = "collective session" if group else "session"
    description = (f"{'Collective session' if group else 'Session'} {session.session_no} of your reverse "
                   f"mentoring programme ({session.format} session). The details are in the e-mail that "
                   "brought this invitation; what is said in the session stays "
                   f"{'within the group' if group else 'between the two of you'}.")
    lines = [
        "BEGIN:VCALENDAR",
        f"PRODID:{PRODID}",
        "VERSION:2.0",
        "CALSCALE:GREGORIAN",
        f"METHOD:{'CANCEL' if cancelled else 'REQUEST'}",
        "BEGIN:VEVENT",
        f"UID:{escape_text(session_uid(pair_id, session.session_no))}",
        f"SEQUENCE:{session.sequence}",
        f"DTSTAMP:{utc_stamp(now)}",
        f"DTSTART:{utc_stamp(start)}",
        f"DTEND:{utc_stamp(start + timedelta(minutes=session.duration_minutes))}",
        f"SUMMARY:{escape_text(f'Reverse mentoring, {title} {session.session_no}')}",
        f"DESCRIPTION:{escape_text(description)}",
        f"ORGANIZER;CN={param_value(organizer_name or 'Reverse mentoring')}:"
        f"mailto:{_no_space(organizer_address)}",
        f"ATTENDEE;ROLE=REQ-PARTICIPANT;RSVP=FALSE:mailto:{_no_space(attendee)}",
        f"STATUS:{'CANCELLED' if cancelled else 'CONFIRMED'}",
        "TRANSP:OPAQUE",
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    return "".join(f"{fold(line)}\r\n" for line in lines).encode("utf-8")


def utc_stamp(moment: datetime) -> str:
    """A DATE-TIME in UTC form (RFC 5545 3.3.5, form #2): 20300514T080000Z."""
    return f"{_aware(moment).astimezone(UTC):%Y%m%dT%H%M%SZ}"


def escape_text(value: str) -> str:
    """A TEXT value (RFC 5545 3.3.11): backslash first, then ; , and line breaks; other control
    characters are not allowed in TEXT, so they are dropped."""
    value = value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
    value = value.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")
    return "".join(ch for ch in value if ch == "\t" or ch >= " " and ch != "\x7f")


def param_value(value: str) -> str:
    """A parameter value (RFC 5545 3.2): no DQUOTE or control characters; quoted if it holds
    a character that would end the parameter."""
    value = "".join(ch for ch in value if ch >= " " and ch not in '"\x7f')
    return f'"{value}"' if any(ch in value for ch in ";:,") else value


def fold(line: str, limit: int = 75) -> str:
    """RFC 5545 3.1: a line longer than 75 octets goes on after CRLF and one space (which counts
    in the next line's 75), cut between characters, never inside a UTF-8 sequence."""
    pieces, current, size = [], "", 0
    for ch in line:
        width = len(ch.encode("utf-8"))
        if size + width > limit:
            pieces.append(current)
            current, size = " ", 1
        current += ch
        size += width
    pieces.append(current)
    return "\r\n".join(pieces)


def _no_space(address: str) -> str:
    return "".join(address.split())
