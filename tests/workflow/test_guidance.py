"""Where the pair stands and what HR can do next, as the Temporal UI shows it: the `state` query
starts with the stage, what the pair waits for, the next deadline and the next actions; the
current details say the same in HR's time zone, with JSON examples ready to paste."""

from __future__ import annotations

import json

from tests.workflow.pairs import HR, MENTOR, Harness, current_details, pair_input
from workflows.inputs import UPDATE_FORMS
from workflows.pair_state import ActionResult


async def test_the_state_query_starts_with_where_the_pair_stands(harness: Harness):
    pair = await harness.start()
    raw = await pair.handle.query("state")  # untyped: the JSON as the UI shows it, in its order
    assert isinstance(raw, dict)
    assert list(raw)[:6] == ["stage", "waiting_for", "next_deadline", "next_deadline_kind", "next_actions",
                             "last_action"]
    assert raw["stage"] == "awaiting_motivation"
    assert raw["next_deadline_kind"] == "motivation_reminder" and raw["next_deadline"].endswith("Z")
    assert raw["next_actions"][0] == f'confirm_motivation {{"recorded_by": "{MENTOR}"}}'
    assert list(raw)[-1] == "policy"


async def test_following_the_suggested_actions_moves_the_pair_on(harness: Harness):
    data = pair_input()
    data["nominated_by"] = {**data["nominated_by"], "time_zone": "Europe/Paris"}
    pair = await harness.start(data)
    for _ in range(9):
        state = await pair.state()
        if state.sessions and state.sessions[0].status == "confirmed":
            break
        name, _, example = state.next_actions[0].partition(" ")
        payload = json.loads(example)
        UPDATE_FORMS[name].model_validate(payload)  # a valid form, ready to paste
        result = await pair.handle.execute_update(name, payload, result_type=ActionResult)
        assert result.next_actions  # the answer says what comes next too
    state = await pair.state()
    assert state.stage.value == "sessions" and state.sessions[0].status == "confirmed"
    assert state.last_action is not None and state.last_action.action == "confirm_session"
    details = await current_details(pair)
    assert "**Stage:** sessions" in details
    assert f"**Last action:** confirm_session by {HR}" in details and "Europe/Paris" in details
    assert "**Next actions**" in details and "- `record_session_held {" in details
    assert "session 1 confirmed for " in details and " UTC" not in details.split("**Next deadline")[0]
