"""Rejected updates: the caller gets a clear message naming the rule or field, and nothing is
recorded, neither in the event log nor in the workflow's history (validators run before it)."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata

from tests.workflow.pairs import HR, MENTEE, MENTEE_TZ, MENTOR, Harness, Pair


async def _accepted_updates(pair: Pair) -> int:
    history = await pair.handle.fetch_history()
    return sum(e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED for e in history.events)


async def _rejected(pair: Pair, update: str, **payload) -> tuple[str, str]:
    """Assert nothing is recorded anywhere; return the rejection's (type, message)."""
    log_before, accepted_before = await pair.timeline(), await _accepted_updates(pair)
    error = await pair.rejection(update, **payload)
    assert await pair.timeline() == log_before
    assert await _accepted_updates(pair) == accepted_before
    for leak in ("Traceback", "/work/", ".py\"", "errors.pydantic.dev", "input_value"):
        assert leak not in error.message
    return error.type, error.message


async def test_wrong_stage_and_wrong_person(harness: Harness):
    pair = await harness.start()
    kind, message = await _rejected(pair, "accept_invitation", recorded_by=MENTEE)
    assert kind == "WrongStage"
    assert message == ("accept_invitation is not possible now: the pair is in stage 'awaiting_motivation', "
                       "and the mentee answers while the invitation is open (stage 'mentee_invited').")
    kind, message = await _rejected(pair, "confirm_motivation", recorded_by=HR)
    assert kind == "NotAParticipant"
    assert message == ("HR001 may not record 'confirm_motivation' for this pair: it is recorded by the "
                       "mentor (E1042). Nothing was recorded.")
    kind, message = await _rejected(pair, "sign_off_mentor", recorded_by=HR)
    assert kind == "WrongStage" and "HR signs the mentor off at the end of preparation" in message
    kind, message = await _rejected(pair, "resume", recorded_by=HR)
    assert (kind, message) == ("RuleViolation", "resume is not possible: the pair is not paused.")

    await pair.act("pause", recorded_by=HR, reason="agenda")
    kind, message = await _rejected(pair, "confirm_motivation", recorded_by=MENTOR)
    assert kind == "PairIsPaused" and "resume it first with the update 'resume'" in message


async def test_only_the_senior_or_hr_records_the_senior_s_answer(harness: Harness):
    pair = await harness.start()
    await pair.act("confirm_motivation", recorded_by=MENTOR)
    for update in ("accept_invitation", "decline_invitation"):
        for intruder in (MENTOR, "E5555"):
            kind, message = await _rejected(pair, update, recorded_by=intruder)
            assert kind == "NotAParticipant"
            assert message.startswith(f"{intruder} may not record '{update}' for this pair: it is "
                                      f"recorded by the mentee ({MENTEE}) or the pair's HR ({HR})")
    assert (await pair.act("accept_invitation", recorded_by=MENTEE)).stage == "preparation"


async def test_bad_payloads_name_each_field_without_echoing_it(harness: Harness):
    pair = await harness.start()
    await pair.prepare()
    await pair.hold_session(feedback=False)

    kind, message = await _rejected(
        pair, "give_feedback", recorded_by=MENTEE, session_no=1, rating=7, engaging="very",
        comment="Bernard Dupont thinks the mentor is great", mood="happy")
    assert kind == "InvalidUpdatePayload"
    assert message == (
        "The update 'give_feedback' was refused: 4 problem(s) in its input:\n"
        "- by_role: is required\n"
        "- rating: should be less than or equal to 5\n"
        "- engaging: should be a valid boolean, unable to interpret input\n"
        "- mood: is not a field of this form (check the spelling)\n"
        "Correct these fields and send it again; nothing was recorded.")
    assert "Bernard" not in message and "happy" not in message

    kind, message = await _rejected(pair, "propose_session", recorded_by="Bernard Dupont",
                                    starts_at="next tuesday", topics=[])
    assert kind == "InvalidUpdatePayload"
    assert "- recorded_by: must be the pseudonymous employee id HR uses" in message
    assert "- starts_at: should be a valid datetime" in message
    assert "- topics: needs at least one entry" in message
    assert "Bernard" not in message

    kind, message = await _rejected(pair, "extend", recorded_by=HR, additional_sessions=30)
    assert kind == "InvalidUpdatePayload" and "- additional_sessions: should be less than or equal to 12" in message
    await pair.act("extend", recorded_by=HR, additional_sessions=12)
    kind, message = await _rejected(pair, "extend", recorded_by=HR, additional_sessions=12)
    assert kind == "RuleViolation" and "at most 24 sessions: 14 are planned, so at most 10" in message

    # Not an object at all.
    from temporalio.client import WorkflowUpdateFailedError

    try:
        await pair.handle.execute_update("pause", ["leave"])
    except WorkflowUpdateFailedError as exc:
        assert exc.cause.type == "InvalidUpdatePayload"
        assert exc.cause.message == ("The update 'pause' was refused: its input must be one JSON object "
                                     "(fields between { and }), not a list. Nothing was recorded.")
    else:
        raise AssertionError("a list was accepted as a payload")


async def test_sessions_must_fit_the_mentee_s_availability(harness: Harness):
    pair = await harness.start()
    await pair.prepare()
    tuesday = await pair.session_slot()  # a Tuesday at 10:00, Paris time
    wednesday = tuesday + timedelta(days=1)
    kind, message = await _rejected(pair, "propose_session", recorded_by=HR,
                                    starts_at=wednesday.isoformat(), topics=["apps"])
    assert kind == "OutsideAvailability"
    assert message == (
        f"the session Wednesday {wednesday:%Y-%m-%d} 10:00-11:00 (Europe/Paris, the mentee's time "
        "zone) is outside the mentee's availability windows: Tuesday 09:00-12:00, Thursday "
        "14:00-17:00 (Europe/Paris). Propose a time inside one of these windows.")
    # Overrunning the window's end by half an hour is outside too.
    late = tuesday.replace(hour=11, minute=30)
    kind, message = await _rejected(pair, "propose_session", recorded_by=HR,
                                    starts_at=late.isoformat(), topics=["apps"])
    assert kind == "OutsideAvailability" and "Tuesday" in message and "11:30-12:30" in message
    # The same instant written in New York time is still judged in the mentee's zone.
    in_new_york = wednesday.astimezone(ZoneInfo("America/New_York")).isoformat()
    kind, _ = await _rejected(pair, "propose_session", recorded_by=HR, starts_at=in_new_york, topics=["apps"])
    assert kind == "OutsideAvailability"
    kind, message = await _rejected(pair, "propose_session", recorded_by=HR,
                                    starts_at=(tuesday - timedelta(days=14)).isoformat(), topics=["apps"])
    assert kind == "RuleViolation" and "is in the past" in message

    # A time without offset is read in the mentee's zone: Thursday 14:00 Paris.
    thursday = datetime.combine(tuesday.date() + timedelta(days=2), time(14, 0))
    result = await pair.act("propose_session", recorded_by=HR, starts_at=thursday.isoformat(),
                            duration_minutes=180, topics=["apps"])
    recorded = (await pair.state()).session(result.session_no).starts_at
    assert recorded == thursday.replace(tzinfo=ZoneInfo(MENTEE_TZ))
    assert recorded.utcoffset() == timedelta(0)  # stored in UTC


async def test_unknown_or_unsuitable_sessions(harness: Harness):
    pair = await harness.start()
    await pair.prepare()
    starts = await pair.session_slot()
    await pair.act("propose_session", recorded_by=HR, starts_at=starts.isoformat(), topics=["apps"])
    kind, message = await _rejected(pair, "confirm_session", recorded_by=HR, session_no=9)
    assert (kind, message) == ("UnknownSession", "confirm_session: there is no session 9 in this pair (sessions: 1).")
    kind, message = await _rejected(pair, "record_session_held", recorded_by=HR, session_no=1,
                                    topics_covered=["apps"])
    assert (kind, message) == ("UnknownSession", "record_session_held: session 1 is proposed; this needs a session that is confirmed.")
    await pair.act("confirm_session", recorded_by=HR, session_no=1)
    kind, message = await _rejected(pair, "record_session_held", recorded_by=HR, session_no=1,
                                    topics_covered=["apps"])
    assert kind == "RuleViolation" and "its outcome can be recorded once it has started" in message
    kind, message = await _rejected(pair, "give_feedback", recorded_by=MENTEE, session_no=1,
                                    by_role="mentee", rating=3, engaging=False)
    assert kind == "UnknownSession" and "session 1 is confirmed; this needs a session that is held" in message
    kind, message = await _rejected(pair, "replace_mentor", recorded_by=HR, reason="other", new_mentor={
        "employee_id": "E2001", "display_name": "N", "email": "n@example.com", "time_zone": "UTC"})
    assert kind == "RuleViolation" and "session(s) 1 are still scheduled with the current mentor" in message


async def test_preparation_rules(harness: Harness):
    pair = await harness.start()
    await pair.act("confirm_motivation", recorded_by=MENTOR)
    await pair.act("accept_invitation", recorded_by=MENTEE)
    kind, message = await _rejected(pair, "sign_off_mentor", recorded_by=HR)
    assert kind == "RuleViolation"
    assert message == (
        "the mentor cannot be signed off yet (rule: define what the mentor will transmit and prepare "
        "them before any session): still missing the curriculum (agree_curriculum) and training "
        "modules reverse-mentoring-basics, confidentiality (complete_training_module).")
    kind, message = await _rejected(pair, "complete_training_module", recorded_by=MENTOR, module="yoga")
    assert kind == "RuleViolation" and "'yoga' is not one of this programme's training modules" in message
    kind, message = await _rejected(pair, "sign_off_mentor", recorded_by=MENTOR)
    assert kind == "NotAParticipant"


async def test_the_ui_lists_every_update_with_its_rule(harness: Harness):
    pair = await harness.start()
    metadata = await pair.handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    updates = {u.name: u.description for u in metadata.definition.update_definitions}
    assert set(updates) == {
        "confirm_motivation", "decline_mentoring", "accept_invitation", "decline_invitation",
        "agree_curriculum", "complete_training_module", "onboard_mentee", "sign_off_mentor",
        "propose_session", "confirm_session", "reschedule_session", "cancel_session",
        "record_session_held", "record_no_show", "give_feedback", "give_final_evaluation",
        "pause", "resume", "withdraw", "replace_mentor", "extend"}
    assert all(len(d) > 30 for d in updates.values())
    assert "Rule: never force the seniors" in updates["accept_invitation"]
    assert [s.name for s in metadata.definition.signal_definitions] == ["answer_follow_up"]


async def test_follow_up_answers_that_do_not_fit_are_ignored(harness: Harness):
    pair = await harness.start()
    await pair.handle.signal("answer_follow_up", {"recorded_by": MENTEE, "days_after_end": 30,
                                                  "by_role": "mentee", "still_using": True})
    await pair.handle.signal("answer_follow_up", {"recorded_by": MENTEE, "colour": "red"})
    await pair.act("confirm_motivation", recorded_by=MENTOR)  # the workflow is alive and well
    assert "FollowUpAnswered" not in await pair.timeline()


async def test_a_nul_in_free_text_is_refused_and_the_pair_keeps_answering(harness: Harness):
    """Free text may hold line breaks, never a NUL: PostgreSQL cannot store it, and an activity
    retried for ever on it left the pair unanswering. Refused by the validator, nothing recorded."""
    pair = await harness.start()
    await pair.act("confirm_motivation", recorded_by=MENTOR)
    await pair.act("accept_invitation", recorded_by=MENTEE, channel="email")
    rejection = await pair.rejection("agree_curriculum", recorded_by=MENTOR, topics=["social networks"],
                                     objectives=["post\u0000 once"])
    assert "objectives: contains a control character (such as NUL)" in rejection.message
    # Line breaks in free text are fine, and the pair answers as before.
    result = await pair.act("agree_curriculum", recorded_by=MENTOR, topics=["social networks"],
                            objectives=["publish a first post\nthen a second"])
    assert result.stage == "preparation"
