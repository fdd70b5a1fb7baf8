"""Side effects of the workflows: the event log, personal data, notifications.

    event_log.py       appends the events a workflow decided, idempotently
    people.py          contact details and private notes, kept out of the log
    notifications.py   the one notification activity and its channels (mail folder, SMTP)
    email_message.py   builds the e-mail (and its iCalendar invitation) for a notice
    temporal_facts.py  what Temporal knows and the workflow cannot see (who asked to cancel)

`build_activities` is what the worker registers; tests build the same list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncpg
    from temporalio.client import Client

    from activities.notifications import NotificationChannel
    from settings import Settings


def notification_channel(settings: Settings) -> NotificationChannel:
    """SMTP when a host is configured, otherwise real .eml files in the state folder's outbox."""
    from activities.notifications import MailFolderChannel, SmtpChannel

    if settings.smtp_host:
        return SmtpChannel(settings.smtp_host, settings.smtp_port, settings.smtp_username,
                           settings.smtp_password, from_address=settings.smtp_from,
                           starttls=settings.smtp_starttls)
    return MailFolderChannel(settings.outbox)


def build_activities(pool: asyncpg.Pool, settings: Settings, client: Client) -> list[Callable[..., Any]]:
    from activities.event_log import EventLogActivities
    from activities.matching import suggest_matches
    from activities.notifications import NotificationActivities
    from activities.people import PeopleActivities
    from activities.programme_health import ProgrammeHealth
    from activities.programme_pairs import ProgrammePairs
    from activities.temporal_facts import TemporalFacts
    from events.store import PostgresEventStore

    store = PostgresEventStore(pool)
    log = EventLogActivities(store)
    people = PeopleActivities(pool)
    notifications = NotificationActivities(pool, notification_channel(settings),
                                           sender=settings.smtp_from)
    return [
        log.append_events,
        log.read_stream,
        people.register_people,
        people.record_private_note,
        notifications.send_notification,
        TemporalFacts(client).cancel_request,
        suggest_matches,
        ProgrammePairs(client, pool).start_pairs,
        ProgrammePairs(client, pool).wind_down_pairs,
        ProgrammeHealth(store, client).programme_figures,
    ]
