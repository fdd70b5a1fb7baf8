"""The lifecycle (README) through Temporal (time-skipping server) and PostgreSQL: each test
drives a pair as HR does and asserts the exact sequence of events recorded in the pair's stream."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta

import pytest
from temporalio.client import WorkflowFailureError, WorkflowUpdateStage
from temporalio.exceptions import CancelledError
from temporalio.worker import Replayer

from tests.workflow.pairs import (
    CONSENT,
    FEEDBACK,
    HR,
    INVITATION,
    MENTEE,
    MENTOR,
    NOMINATION,
    PREPARATION,
    PREPARED,
    SESSION,
    Harness,
    both,
    current_details,
    lifecycle_with_same_day_follow_ups,
    lifecycle_without_final_evaluations,
    search_attributes,
)
from workflows.pair import MentoringPair
from workflows.pair_effects import SHORTEST_TIMER_MEMO
from workflows.pair_state import PairOutcome, Stage
from workflows.payloads import DATA_CONVERTER

NEW_MENTOR = {"employee_id": "E2001", "display_name": "Nina Rossi", "email": "nina.rossi@example.com",
              "time_zone": "Europe/Rome", "topics_mastered": ["mobile apps"]}


async def test_happy_path_from_nomination_to_the_90_day_follow_up(harness: Harness):
    pair = await harness.start()
    assert await search_attributes(pair) == {
        "MentoringProgramme": pair.data["programme_id"], "MentoringStage": "awaiting_motivation",
        "MentoringAtRisk": False,
        "MentoringNextDeadline": (await pair.state()).clock_start + timedelta(days=3)}
    await pair.prepare()
    await pair.hold_session()

    # Midway, HR sees where the pair stands, with no name or e-mail anywhere.
    state = await pair.state()
    assert (state.stage, state.sessions_held) == (Stage.SESSIONS, 1)
    attributes = await search_attributes(pair)
    assert attributes["MentoringStage"] == "sessions"
    assert attributes["MentoringNextDeadline"] == state.clock_start + timedelta(days=30)  # stall nudge
    details = await current_details(pair)
    assert "**Stage:** sessions" in details and "1 session(s) to propose" in details
    assert "**Next deadline:**" in details and "(nudge)" in details

    await pair.hold_session()
    assert (await pair.state()).stage is Stage.FINAL_EVALUATION
    await pair.act("give_final_evaluation", recorded_by=MENTOR, by_role="mentor", rating=5,
                   would_recommend=True)
    done = await pair.act("give_final_evaluation", recorded_by=MENTEE, by_role="mentee", rating=4,
                          would_recommend=True, comment="Worth every minute")
    assert done.stage == "follow_up"

    last_session = (await pair.state()).last_session_at
    await harness.skip(days=31)
    await pair.wait_for(lambda s: s.follow_ups_sent == [30])
    await pair.handle.signal("answer_follow_up", {"recorded_by": MENTEE, "days_after_end": 30,
                                                  "by_role": "mentee", "still_using": True})
    await harness.skip(days=60)
    await pair.wait_for(lambda s: s.follow_ups_sent == [30, 90])
    for role, who in (("mentor", MENTOR), ("mentee", MENTEE)):
        await pair.handle.signal("answer_follow_up", {"recorded_by": who, "days_after_end": 90,
                                                      "by_role": role, "still_using": role == "mentee"})
    outcome = await pair.handle.result()

    assert await pair.timeline() == [
        "PairNominated", "NotificationSent:motivation_request>mentor",
        "MentorMotivationConfirmed", "MenteeInvited", "NotificationSent:invitation>mentee",
        "MenteeConsentGiven", "NotificationSent:preparation_started>mentor",
        "NotificationSent:mentee_onboarding>mentee",
        "CurriculumAgreed", "TrainingModuleCompleted", "TrainingModuleCompleted", "MenteeOnboarded",
        "MentorSignedOff", *both("sessions_open"),
        "SessionProposed", *both("session_invitation"), "SessionConfirmed", *both("session_reminder"),
        "SessionHeld", *both("feedback_request"), "FeedbackGiven", "FeedbackGiven",
        "SessionProposed", *both("session_invitation"), "SessionConfirmed", *both("session_reminder"),
        "SessionHeld", *both("feedback_request"), *both("final_evaluation_request"),
        "FeedbackGiven", "FeedbackGiven", "FinalEvaluationGiven", "FinalEvaluationGiven",
        "FollowUpSent", *both("follow_up"), "FollowUpAnswered",
        "FollowUpSent", *both("follow_up"), "FollowUpAnswered", "FollowUpAnswered",
        "PairCompleted",
    ]
    events = await harness.store.read_stream(pair.stream_id)
    assert outcome == PairOutcome(pair_id=pair.stream_id.removeprefix("pair-"), stage="completed",
                                  sessions_held=2, stream_version=len(events))
    assert [e.version for e in events] == list(range(1, len(events) + 1))
    assert len({e.event_id for e in events}) == len(events)
    assert (await harness.store.verify()).ok

    # Times come from the policy: reminder 24 hours before, follow-ups 30 and 90 days after the end.
    by_type = {}
    for e in events:
        by_type.setdefault(e.event_type, []).append(e)
    follow_ups = [e.metadata["occurred_at"] for e in by_type["FollowUpSent"]]
    assert [e.payload["days_after_end"] for e in by_type["FollowUpSent"]] == [30, 90]
    assert [round((datetime.fromisoformat(t) - last_session) / timedelta(days=1), 3)
            for t in follow_ups] == [30, 90]
    first = (await pair.state()).sessions[0]
    reminder = next(e for e in events if e.payload.get("kind") == "session_reminder")
    sent_before = first.starts_at - datetime.fromisoformat(reminder.metadata["occurred_at"])
    assert abs(sent_before - timedelta(hours=24)) < timedelta(seconds=5)

    # Who did what: actors and the update that caused each fact.
    consent = by_type["MenteeConsentGiven"][0]
    assert consent.metadata["actor"] == MENTEE and consent.metadata["causation_id"]
    assert consent.payload == {"mentee_id": MENTEE, "channel": "email", "recorded_by": MENTEE}

    # Personal data stays out of the log: contacts in `people`, the comments in `private_notes`.
    pool = harness.store.pool
    log_text = " ".join(await pool.fetchval(
        "SELECT string_agg(payload::text || metadata::text, ' ') FROM events"))
    for personal in ("Léa", "Martin", "Bernard", "example.com", "privacy settings", "Worth every"):
        assert personal not in log_text
    assert await pool.fetchval("SELECT count(*) FROM people WHERE email LIKE '%@example.com'") == 3
    objectives = await pool.fetch("SELECT author_id, body FROM private_notes WHERE kind = 'curriculum_objectives'")
    assert [tuple(o) for o in objectives] == [(MENTOR, '["publish a first post", "tune privacy settings"]')]
    notes = await pool.fetch("SELECT event_id, author_id, body, shared FROM private_notes WHERE kind = 'comment' "
                             "ORDER BY body")
    assert [(n["author_id"], n["body"], n["shared"]) for n in notes] == [
        (MENTEE, "I finally understand my privacy settings", False),
        (MENTEE, "I finally understand my privacy settings", False),
        (MENTEE, "Worth every minute", False)]
    noted = {e.event_id for e in events if e.payload.get("has_private_comment")}
    assert {n["event_id"] for n in notes} == noted and len(noted) == 3

    assert (await search_attributes(pair))["MentoringStage"] == "completed"
    assert "MentoringNextDeadline" not in await search_attributes(pair)


async def test_final_evaluation_window_closes_without_both_and_follow_ups_go_on(harness: Harness):
    pair = await lifecycle_without_final_evaluations(harness)
    timeline = await pair.timeline()
    closed = timeline.index("FinalEvaluationWindowClosed")
    assert timeline[closed - 1] == "FinalEvaluationGiven"
    assert timeline[closed + 1:] == ["FollowUpSent", *both("follow_up"), "FollowUpSent", *both("follow_up"),
                                     "PairCompleted"]
    events = await harness.store.read_stream(pair.stream_id)
    assert events[closed].payload == {"evaluations_from": ["mentor"]}
    assert events[closed].metadata["actor"] == "system"


async def test_mentor_declines(harness: Harness):
    pair = await harness.start()
    result = await pair.act("decline_mentoring", recorded_by=MENTOR, reason="no_time")
    assert result.stage == "declined"
    assert (await pair.handle.result()).stage == "declined"
    assert await pair.timeline() == NOMINATION + ["MentorDeclined", "NotificationSent:pair_closed>mentor"]


async def test_mentor_silent_nomination_lapses_after_a_reminder(harness: Harness):
    pair = await harness.start()
    outcome = await pair.handle.result()  # the server skips to each deadline
    assert outcome.stage == "expired"
    assert await pair.timeline() == NOMINATION + [
        "NotificationSent:motivation_reminder>mentor", "MentorMotivationExpired",
        "NotificationSent:pair_closed>mentor"]


async def test_mentee_declines(harness: Harness):
    pair = await harness.start()
    await pair.act("confirm_motivation", recorded_by=MENTOR)
    await pair.act("decline_invitation", recorded_by=HR, channel="email")  # HR enters the answer
    assert (await pair.handle.result()).stage == "declined"
    assert await pair.timeline() == NOMINATION + INVITATION + [
        "MenteeDeclined", *both("pair_closed")]
    declined = (await harness.store.read_stream(pair.stream_id))[5]
    assert declined.payload == {"mentee_id": MENTEE, "channel": "email", "recorded_by": HR}


async def test_an_undeliverable_notice_is_recorded_and_the_pair_goes_on(harness: Harness):
    pair = await harness.start()
    # The mentee's personal data was erased: there is no address to invite them at.
    await harness.store.pool.execute(
        "UPDATE people SET email = NULL, display_name = NULL, erased_at = now() "
        "WHERE employee_id = $1", MENTEE)
    await pair.act("confirm_motivation", recorded_by=MENTOR)
    await pair.wait_for(lambda s: s.version >= 5)
    await pair.act("decline_invitation", recorded_by=HR, channel="in_person")  # HR asked them instead
    assert (await pair.handle.result()).stage == "declined"
    assert await pair.timeline() == NOMINATION + [
        "MentorMotivationConfirmed", "MenteeInvited", "NotificationFailed", "MenteeDeclined",
        "NotificationSent:pair_closed>mentor", "NotificationFailed"]
    failed = next(e for e in await harness.store.read_stream(pair.stream_id)
                  if e.event_type == "NotificationFailed")
    assert failed.payload == {"kind": "invitation", "recipient_id": MENTEE, "recipient_role": "mentee",
                              "reason": "RecipientUnavailable", "session_no": None}
    assert [r.kind for r in harness.sent if r.recipient_id == MENTEE] == []


async def test_reminders_announce_the_real_deadline_after_a_pause(harness: Harness):
    pair = await harness.start()
    await harness.skip(days=4)  # past the motivation reminder (day 3)
    await pair.wait_for(lambda s: "motivation_reminder" in s.timers_fired)
    await pair.act("confirm_motivation", recorded_by=MENTOR)
    await pair.act("pause", recorded_by=HR, reason="leave")
    await harness.skip(days=5)
    await pair.act("resume", recorded_by=HR)
    assert (await pair.handle.result()).stage == "expired"
    events = await harness.store.read_stream(pair.stream_id)
    expired_at = datetime.fromisoformat(
        next(e for e in events if e.event_type == "InvitationExpired").metadata["occurred_at"])
    nominated_at = datetime.fromisoformat(events[0].metadata["occurred_at"])
    deadlines = {r.kind: r.deadline for r in harness.sent}
    assert abs(deadlines["motivation_reminder"] - (nominated_at + timedelta(days=7))) < timedelta(seconds=5)
    # Invited on day 4, paused 5 days: the invitation expires on day 4 + 14 + 5, as the reminder says.
    assert abs(deadlines["invitation_reminder"] - expired_at) < timedelta(seconds=5)
    assert abs(expired_at - nominated_at - timedelta(days=23)) < timedelta(minutes=5)


async def test_a_notice_that_fails_for_an_hour_of_attempts_is_recorded_and_the_pair_goes_on(harness: Harness):
    pair = await harness.start()
    # The mail channel breaks: its outbox folder becomes a file, so every delivery fails (and
    # would be retried for ever).
    shutil.rmtree(harness.outbox)
    harness.outbox.write_text("not a folder")
    # The update returns once the invitation went out, which now takes an hour of retries; the
    # server does not skip time while an activity waits to be retried: move the clock on.
    update = await pair.handle.start_update("confirm_motivation", {"recorded_by": MENTOR},
                                            wait_for_stage=WorkflowUpdateStage.ACCEPTED)
    for _day in range(20):
        await harness.skip(days=1)
        if (await pair.state()).closed:
            break
    assert (await pair.handle.result()).stage == "expired"
    await update.result()
    events = await harness.store.read_stream(pair.stream_id)
    failed = [e.payload for e in events if e.event_type == "NotificationFailed"]
    # The last attempt's error is kept: the channel failed (not a timeout, not a refusal).
    # (Each retried apart: the two closing notices are recorded in whichever order they failed.)
    assert [(f["kind"], f["recipient_role"], f["reason"]) for f in failed[:2]] == [
        ("invitation", "mentee", "DeliveryFailed"), ("invitation_reminder", "mentee", "DeliveryFailed")]
    assert sorted((f["kind"], f["recipient_role"], f["reason"]) for f in failed[2:]) == [
        ("pair_closed", "mentee", "DeliveryFailed"), ("pair_closed", "mentor", "DeliveryFailed")]
    invited, first_failure = _first_two(events)  # 20 attempts: about an hour of retries in between
    assert timedelta(minutes=50) <= first_failure - invited <= timedelta(minutes=65)


async def test_a_notice_being_retried_holds_no_other_action_of_the_pair(harness: Harness):
    pair = await harness.start()
    harness.mail_down = True
    # The invitation's first attempts fail within seconds: the update returns, and the notice is
    # retried apart while the mentee's consent is recorded at once.
    await pair.act("confirm_motivation", recorded_by=MENTOR)
    state = await pair.state()
    assert state.notices_retrying == 1
    assert "**Notices being retried:** 1" in await current_details(pair)  # what the UI shows
    await pair.act("accept_invitation", recorded_by=MENTEE, channel="in_person")
    assert (await pair.state()).notices_retrying == 3  # and the two that consent opens
    harness.mail_down = False  # the mail server is back: the next attempts deliver
    await harness.skip(minutes=2)
    await pair.wait_for(lambda s: s.notices_retrying == 0)
    # Each recorded once when it went out, after what happened meanwhile.
    timeline = await pair.timeline()
    assert timeline[:3] == ["PairNominated", "NotificationSent:motivation_request>mentor", "MentorMotivationConfirmed"]
    assert timeline[3:5] == ["MenteeInvited", "MenteeConsentGiven"]
    assert sorted(timeline[5:]) == ["NotificationSent:invitation>mentee", "NotificationSent:mentee_onboarding>mentee",
                                    "NotificationSent:preparation_started>mentor"]
    assert sorted(r.kind for r in harness.sent) == ["invitation", "mentee_onboarding", "motivation_request",
                                                    "preparation_started"]
    # The notices retried apart are part of the history, which replays.
    replayed = await Replayer(workflows=[MentoringPair], data_converter=DATA_CONVERTER).replay_workflow(
        await pair.handle.fetch_history())
    assert replayed.replay_failure is None


async def test_a_pair_cancelled_while_notices_are_retried_records_them_then_ends(harness: Harness):
    pair = await harness.start()
    harness.mail_down = True
    await pair.act("confirm_motivation", recorded_by=MENTOR)  # the invitation is retried apart
    await pair.handle.cancel()
    # The closing notices fail their first attempts too; the run stays open until every notice
    # retried apart is recorded, then ends as cancelled in Temporal.
    await pair.wait_for(lambda s: s.closed and s.notices_retrying == 3)
    harness.mail_down = False
    await harness.skip(minutes=2)
    with pytest.raises(WorkflowFailureError) as ended:
        await pair.handle.result()
    assert isinstance(ended.value.cause, CancelledError)
    timeline = await pair.timeline()
    assert timeline[:5] == ["PairNominated", "NotificationSent:motivation_request>mentor",
                            "MentorMotivationConfirmed", "MenteeInvited", "PairCancelled"]
    assert sorted(timeline[5:]) == ["NotificationSent:invitation>mentee", "NotificationSent:pair_closed>mentee",
                                    "NotificationSent:pair_closed>mentor"]


def _first_two(events: list) -> tuple[datetime, datetime]:
    times = [datetime.fromisoformat(e.metadata["occurred_at"]) for e in events
             if e.event_type in ("MenteeInvited", "NotificationFailed")]
    return times[0], times[1]


async def test_invitation_expires_after_a_reminder(harness: Harness):
    pair = await harness.start()
    await pair.act("confirm_motivation", recorded_by=MENTOR)
    assert (await pair.handle.result()).stage == "expired"
    assert await pair.timeline() == NOMINATION + INVITATION + [
        "NotificationSent:invitation_reminder>mentee", "InvitationExpired", *both("pair_closed")]
    events = await harness.store.read_stream(pair.stream_id)
    invited = events[3].payload["expires_at"]
    assert events[-3].event_type == "InvitationExpired"
    assert events[-3].metadata["occurred_at"][:16] == invited.replace("+00:00", "Z")[:16]


@pytest.mark.parametrize(("stage", "role", "who"), [
    ("awaiting_motivation", "hr", HR),
    ("preparation", "mentee", MENTEE),
    ("sessions", "mentor", MENTOR),
])
async def test_withdrawal_at_any_stage(harness: Harness, stage: str, role: str, who: str):
    pair = await harness.start()
    expected = list(NOMINATION)
    if stage != "awaiting_motivation":
        await pair.act("confirm_motivation", recorded_by=MENTOR)
        await pair.act("accept_invitation", recorded_by=MENTEE)
        expected += INVITATION + CONSENT
    if stage == "sessions":
        await pair.prepare_rest()
        starts = await pair.session_slot()
        await pair.act("propose_session", recorded_by=HR, starts_at=starts.isoformat(), topics=["apps"])
        expected += PREPARATION + both("sessions_open") + ["SessionProposed", *both("session_invitation")]
    assert (await pair.state()).stage.value == stage

    result = await pair.act("withdraw", recorded_by=who, role=role, reason="no_time")
    assert result.stage == "withdrawn"
    closing = ["PairWithdrawn"]
    if stage == "sessions":  # the session still ahead is taken out of both calendars
        closing += ["SessionCancelled", *both("session_cancelled")]
    closing += ["NotificationSent:pair_closed>mentor"] + (
        ["NotificationSent:pair_closed>mentee"] if stage != "awaiting_motivation" else [])
    assert await pair.timeline() == expected + closing
    withdrawn = next(e for e in await harness.store.read_stream(pair.stream_id)
                     if e.event_type == "PairWithdrawn")
    assert withdrawn.payload == {"withdrawn_by": who, "role": role, "stage": stage, "reason": "no_time"}
    assert withdrawn.metadata["actor"] == who
    assert (await pair.handle.result()).stage == "withdrawn"


async def test_no_show_frees_the_slot_for_another_session(harness: Harness):
    pair = await harness.start()
    await pair.prepare()
    starts = await pair.session_slot()
    await pair.act("propose_session", recorded_by=HR, starts_at=starts.isoformat(), topics=["apps"])
    await pair.act("confirm_session", recorded_by=HR, session_no=1)
    await pair.skip_past(starts + timedelta(minutes=20))
    await pair.wait_for(lambda s: s.session(1).reminder_sent)
    result = await pair.act("record_no_show", recorded_by=HR, session_no=1, absent="mentee")
    assert result.stage == "sessions"
    state = await pair.state()
    assert (state.sessions_held, state.sessions_to_schedule) == (0, 2)
    assert await pair.timeline() == PREPARED + [
        "SessionProposed", *both("session_invitation"), "SessionConfirmed", *both("session_reminder"),
        "SessionMissed"]
    second = await pair.act("propose_session", recorded_by=HR,
                            starts_at=(await pair.session_slot()).isoformat(), topics=["apps"])
    assert second.session_no == 2


async def test_stalled_sessions_are_nudged_escalated_then_lapse(harness: Harness):
    pair = await harness.start()
    await pair.prepare()
    await harness.skip(days=46)
    state = await pair.wait_for(lambda s: s.at_risk)
    assert (await search_attributes(pair))["MentoringAtRisk"] is True
    assert "**At risk:** escalated to HR" in await current_details(pair)
    assert (await search_attributes(pair))["MentoringNextDeadline"] == state.clock_start + timedelta(days=60)

    assert (await pair.handle.result()).stage == "lapsed"
    assert await pair.timeline() == PREPARED + [
        "PairNudged", *both("nudge"),
        "PairFlaggedAtRisk", "EscalatedToHr", "NotificationSent:escalation>hr",
        "PairLapsed", *both("pair_closed")]
    events = {e.event_type: e for e in await harness.store.read_stream(pair.stream_id)}
    assert events["EscalatedToHr"].payload == {"stage": "sessions", "reason": "no_session_activity"}
    escalation = next(r for r in harness.sent if r.kind == "escalation")
    assert escalation.recipient_id == HR


async def test_stalled_preparation_is_escalated_and_back_on_track_when_it_moves(harness: Harness):
    pair = await harness.start()
    await pair.act("confirm_motivation", recorded_by=MENTOR)
    await pair.act("accept_invitation", recorded_by=MENTEE)
    await harness.skip(days=22)
    await pair.wait_for(lambda s: s.at_risk)
    result = await pair.act("agree_curriculum", recorded_by=MENTOR, topics=["social networks"],
                            objectives=["post once a week"])
    assert result.stage == "preparation"
    assert (await pair.state()).at_risk is False
    assert (await search_attributes(pair))["MentoringAtRisk"] is False
    assert await pair.timeline() == NOMINATION + INVITATION + CONSENT + [
        *both("preparation_reminder"), "PairFlaggedAtRisk", "EscalatedToHr",
        "NotificationSent:escalation>hr", "CurriculumAgreed", "PairBackOnTrack"]


async def test_pause_stops_the_stage_clock_and_resume_restarts_it(harness: Harness):
    pair = await harness.start()
    await pair.act("confirm_motivation", recorded_by=MENTOR)  # invitation: reminder 7d, expiry 14d
    await harness.skip(days=5)
    paused = await pair.act("pause", recorded_by=HR, reason="leave")
    assert paused.paused and "resume" in paused.waiting_for
    attributes = await search_attributes(pair)
    assert attributes["MentoringStage"] == "paused" and "MentoringNextDeadline" not in attributes

    await harness.skip(days=20)  # long past both deadlines: nothing fires while paused
    assert await pair.timeline() == NOMINATION + INVITATION + ["PairPaused"]
    await pair.act("resume", recorded_by=HR)
    assert (await search_attributes(pair))["MentoringStage"] == "mentee_invited"

    await harness.skip(days=1.9)  # 6.9 active days: no reminder yet
    assert "NotificationSent:invitation_reminder>mentee" not in await pair.timeline()
    await harness.skip(days=0.2)
    await pair.wait_for(lambda s: "invitation_reminder" in s.timers_fired)
    assert (await pair.handle.result()).stage == "expired"
    events = await harness.store.read_stream(pair.stream_id)
    assert [e.event_type for e in events][5:] == [
        "PairPaused", "PairResumed", "NotificationSent", "InvitationExpired", "NotificationSent",
        "NotificationSent"]
    at = {e.event_type: datetime.fromisoformat(e.metadata["occurred_at"]) for e in events}
    invited, reminded = at["MenteeInvited"], datetime.fromisoformat(events[7].metadata["occurred_at"])
    assert round(events[6].payload["paused_days"]) == 20
    # Both deadlines moved on by the 20 paused days: reminder at 7 + 20, expiry at 14 + 20.
    assert round((reminded - invited) / timedelta(days=1), 2) == 7 + 20
    assert round((at["InvitationExpired"] - invited) / timedelta(days=1), 2) == 14 + 20


async def test_mentor_replaced_newcomer_is_motivated_and_prepared_then_sessions_go_on(harness: Harness):
    pair = await harness.start()
    await pair.prepare()
    await pair.hold_session()
    result = await pair.act("replace_mentor", recorded_by=HR, new_mentor=NEW_MENTOR, reason="mentor_left")
    assert result.stage == "awaiting_motivation"
    rejected = await pair.rejection("confirm_motivation", recorded_by=MENTOR)
    assert rejected.type == "NotAParticipant"
    await pair.act("confirm_motivation", recorded_by="E2001")
    state = await pair.state()
    assert (state.stage, state.mentor_id, state.sessions_held) == (Stage.PREPARATION, "E2001", 1)
    for module in ("reverse-mentoring-basics", "confidentiality"):
        await pair.act("complete_training_module", recorded_by="E2001", module=module)
    await pair.act("sign_off_mentor", recorded_by=HR)  # curriculum and onboarding still stand
    assert (await pair.state()).stage is Stage.SESSIONS
    await pair.hold_session(feedback=False)
    assert (await pair.state()).stage is Stage.FINAL_EVALUATION

    assert await pair.timeline() == PREPARED + SESSION + FEEDBACK + [
        "MentorReplaced", "NotificationSent:motivation_request>mentor",
        "MentorMotivationConfirmed", "NotificationSent:preparation_started>mentor",
        "TrainingModuleCompleted", "TrainingModuleCompleted", "MentorSignedOff", *both("sessions_open"),
        *SESSION, *both("final_evaluation_request")]
    events = await harness.store.read_stream(pair.stream_id)
    replaced = next(e for e in events if e.event_type == "MentorReplaced")
    assert replaced.payload == {"previous_mentor_id": MENTOR, "new_mentor_id": "E2001",
                                "replaced_by": HR, "reason": "mentor_left"}
    asked = events[replaced.version]  # the next event: the newcomer is asked, not the first mentor
    assert (asked.payload["kind"], asked.payload["recipient_id"]) == ("motivation_request", "E2001")
    assert await harness.store.pool.fetchval(
        "SELECT time_zone FROM people WHERE employee_id = 'E2001'") == "Europe/Rome"


async def test_extend_adds_sessions_even_after_the_last_one(harness: Harness):
    pair = await harness.start()
    await pair.prepare()
    await pair.hold_session(feedback=False)
    await pair.hold_session(feedback=False)
    assert (await pair.state()).stage is Stage.FINAL_EVALUATION
    result = await pair.act("extend", recorded_by=HR, additional_sessions=1)
    assert (result.stage, (await pair.state()).sessions_planned) == ("sessions", 3)
    await pair.hold_session(feedback=False)
    assert (await pair.state()).stage is Stage.FINAL_EVALUATION
    assert await pair.timeline() == PREPARED + SESSION + SESSION + [
        *both("final_evaluation_request"), "PairExtended", *both("sessions_open"), *SESSION,
        *both("final_evaluation_request")]


async def test_reschedule_and_cancel_update_both_calendars(harness: Harness):
    pair = await harness.start()
    await pair.prepare()
    tuesday = await pair.session_slot()
    await pair.act("propose_session", recorded_by=HR, starts_at=tuesday.isoformat(), topics=["apps"])
    await pair.act("confirm_session", recorded_by=HR, session_no=1)
    thursday = tuesday.replace(hour=15) + timedelta(days=2)
    moved = await pair.act("reschedule_session", recorded_by=HR, session_no=1, starts_at=thursday.isoformat())
    assert moved.session_no == 1
    await pair.act("propose_session", recorded_by=HR, starts_at=(tuesday + timedelta(days=7)).isoformat(),
                   topics=["privacy"])
    await pair.act("cancel_session", recorded_by=MENTEE, session_no=2, cancelled_by="mentee", reason="illness")
    state = await pair.state()
    first, second = state.session(1), state.session(2)
    assert (first.starts_at, first.sequence, first.status) == (thursday, 1, "confirmed")
    assert (second.status, second.sequence, state.sessions_to_schedule) == ("cancelled", 1, 1)

    await pair.skip_past(thursday - timedelta(hours=23))
    await pair.wait_for(lambda s: s.session(1).reminder_sent)  # 24 hours before the *new* time
    assert await pair.timeline() == PREPARED + [
        "SessionProposed", *both("session_invitation"), "SessionConfirmed",
        "SessionRescheduled", *both("session_invitation"),
        "SessionProposed", *both("session_invitation"), "SessionCancelled", *both("session_cancelled"),
        *both("session_reminder")]
    events = await harness.store.read_stream(pair.stream_id)
    rescheduled = next(e for e in events if e.event_type == "SessionRescheduled")
    assert datetime.fromisoformat(rescheduled.payload["previous_starts_at"]) == tuesday
    reminder = next(e for e in events if e.payload.get("kind") == "session_reminder")
    sent_before = thursday - datetime.fromisoformat(reminder.metadata["occurred_at"])
    assert abs(sent_before - timedelta(hours=24)) < timedelta(seconds=5)
    calendar = [(r.kind, r.session.session_no, r.session.sequence, r.session.cancelled)
                for r in harness.sent if r.session and r.recipient_role == "mentee"]
    assert calendar == [("session_invitation", 1, 0, False), ("session_invitation", 1, 1, False),
                        ("session_invitation", 2, 0, False), ("session_cancelled", 2, 1, True),
                        ("session_reminder", 1, 1, False)]


async def test_a_reminder_too_late_to_help_is_recorded_as_skipped_not_dropped(harness: Harness):
    """A session confirmed once it has begun: its reminder is handled, found too late, and the
    log says so (for each person, with why) instead of silently saying nothing."""
    pair = await harness.start()
    await pair.prepare()
    starts = await pair.session_slot()
    await pair.act("propose_session", recorded_by=HR, starts_at=starts.isoformat(), topics=["apps"])
    await pair.skip_past(starts + timedelta(minutes=10))
    confirmed = await pair.act("confirm_session", recorded_by=HR, session_no=1)
    await pair.wait_for(lambda s: s.version == confirmed.stream_version + 2)
    assert await pair.timeline() == PREPARED + [
        "SessionProposed", *both("session_invitation"), "SessionConfirmed",
        "NotificationSkipped", "NotificationSkipped"]
    skipped = [e.payload for e in await harness.store.read_stream(pair.stream_id)][-2:]
    assert {(p["kind"], p["recipient_role"], p["reason"], p["session_no"]) for p in skipped} == {
        ("session_reminder", "mentor", "SessionAlreadyStarted", 1),
        ("session_reminder", "mentee", "SessionAlreadyStarted", 1)}
    assert not [r for r in harness.sent if r.kind == "session_reminder"], "a reminder was e-mailed"
    # The pair goes on: the session can still be recorded as held.
    assert (await pair.act("record_session_held", recorded_by=HR, session_no=1,
                           topics_covered=["apps"])).stage == "sessions"


async def test_an_outcome_recorded_before_the_reminder_went_out_records_it_skipped(harness: Harness):
    """The reminder's timer had not fired yet when the session was recorded held (in production:
    its worker died; here: a session confirmed once begun, whose past-due reminder gets a timer
    made long by the memo): the reminder can no longer help, and the log says so in the same
    append as the outcome, instead of the reminder silently vanishing."""
    pair = await harness.start(memo={SHORTEST_TIMER_MEMO: 3600})
    await pair.prepare()
    starts = await pair.session_slot()
    await pair.act("propose_session", recorded_by=HR, starts_at=starts.isoformat(), topics=["apps"])
    await pair.skip_past(starts + timedelta(minutes=10))
    await pair.act("confirm_session", recorded_by=HR, session_no=1)
    await pair.act("record_session_held", recorded_by=HR, session_no=1, topics_covered=["apps"])
    assert await pair.timeline() == PREPARED + [
        "SessionProposed", *both("session_invitation"), "SessionConfirmed",
        "SessionHeld", "NotificationSkipped", "NotificationSkipped", *both("feedback_request")]
    assert (await pair.state()).session(1).reminder_sent  # handled: no timer left for it
    assert not [r for r in harness.sent if r.kind == "session_reminder"]


async def test_follow_ups_sent_the_same_day_are_answered_apart(harness: Harness):
    """Follow-ups hours apart both go out "0 days after the end": each carries its number, the
    answers to the second are not taken for repeats of the first, and the pair completes with the
    last answer instead of waiting for the window to close."""
    pair = await lifecycle_with_same_day_follow_ups(harness)
    events = await harness.store.read_stream(pair.stream_id)
    sent = [(e.payload["days_after_end"], e.payload["follow_up_no"]) for e in events if e.event_type == "FollowUpSent"]
    assert sent == [(0, 1), (0, 2)]
    answered = [(e.payload["follow_up_no"], e.payload["by_role"]) for e in events
                if e.event_type == "FollowUpAnswered"]
    assert answered == [(1, "mentor"), (1, "mentee"), (2, "mentor"), (2, "mentee")]
    assert [e.event_type for e in events][-2:] == ["FollowUpAnswered", "PairCompleted"]
    assert (await pair.state()).signals_ignored == 0
