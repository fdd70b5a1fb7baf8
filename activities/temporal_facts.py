"""What Temporal knows about a pair's workflow that the workflow itself cannot see.

A cancellation reaches the workflow without the identity of whoever asked (the Web UI's user, the
CLI's `user@host`): this activity reads it from the run's history.
"""

from __future__ import annotations

import re

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from events.messages import CancelRequest, CancelRequestQuery

_E_MAIL = re.compile(r"[^\s@:<>]+@[^\s@]+\.[A-Za-z]{2,}")
UNKNOWN = "unknown"


def masked_identity(identity: str) -> str:
    """An identity fit for the log: e-mail addresses masked, one short line."""
    text = _E_MAIL.sub("(an e-mail address)", " ".join(identity.split()))
    return text[:100] or UNKNOWN


class TemporalFacts:
    """Register `TemporalFacts(client).cancel_request`."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn(name="cancel_request")
    async def cancel_request(self, query: CancelRequestQuery) -> CancelRequest:
        handle = self._client.get_workflow_handle(query.workflow_id, run_id=query.run_id)
        found = CancelRequest(identity=UNKNOWN)
        # Read forwards (the time-skipping test server has no reverse read); a cancellation is
        # rare and a run's history is bounded by continue-as-new.
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED:
                asked = event.workflow_execution_cancel_requested_event_attributes
                found = CancelRequest(identity=masked_identity(asked.identity), with_reason=bool(asked.cause))
        return found
