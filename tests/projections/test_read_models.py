"""The read models, built by the runner from realistic pair lifecycles."""

from __future__ import annotations

import uuid
from datetime import timedelta

from events.base import EventMetadata, NewEvent
from events.store import PostgresEventStore
from projections.runner import ProjectionRunner
from tests.projections import lifecycles as story


async def _seed(store: PostgresEventStore) -> dict[str, story.PairStory]:
    stories = {
        "full": story.full_lifecycle("p-full"),
        "declined": story.declined_by_mentee("p-declined", mentor_id="E101", mentee_id="E901"),
        "mentor-declined": story.declined_by_mentor("p-mdeclined", mentor_id="E102"),
        "expired": story.expired_invitation("p-expired", mentee_id="E902"),
        "withdrawn": story.withdrawn_during_sessions("p-withdrawn", mentor_id="E103",
                                                      mentee_id="E903"),
        "lapsed": story.lapsed_after_risk("p-lapsed", mentor_id="E104", mentee_id="E904"),
        "replaced": story.replaced_mentor("p-replaced", new_mentor="E105", mentee_id="E905"),
        "other-programme": story.full_lifecycle("p-other", programme_id="prog-B"),
    }
    await story.write_all(store, list(stories.values()))
    return stories


async def test_pair_overview_tells_where_each_pair_stands(store: PostgresEventStore,
                                                          runner: ProjectionRunner):
    stories = await _seed(store)
    statuses = await runner.run_until_caught_up()
    assert {s.status for s in statuses} == {"running"} and {s.behind for s in statuses} == {0}

    rows = {r["pair_id"]: r for r in await store.pool.fetch("SELECT * FROM pair_overview.pairs")}
    assert set(rows) == {s.pair_id for s in stories.values()}
    full = rows["p-full"]
    assert (full["programme_id"], full["stage"], full["sessions_planned"], full["sessions_held"]) \
        == ("prog-A", "completed", 3, 3)
    # Session feedback from both sides: mentee 4, 5, 3 and mentor 4, 4, 4.
    assert (full["rating_sum"], full["rating_count"]) == (24, 6)
    assert full["ended_at"] == stories["full"].steps[-1].at
    assert rows["p-declined"]["stage"] == "declined"
    assert rows["p-expired"]["stage"] == "expired"
    assert rows["p-withdrawn"]["stage"] == "withdrawn"
    lapsed = rows["p-lapsed"]
    assert lapsed["stage"] == "lapsed" and lapsed["at_risk"] is False  # closed pairs are not at risk
    # Timers are not activity: the lapsed pair's last activity is the missed session.
    assert lapsed["last_activity_at"] < lapsed["ended_at"] - timedelta(days=30)
    replaced = rows["p-replaced"]
    assert (replaced["mentor_id"], replaced["stage"], replaced["sessions_planned"]) \
        == ("E105", "sessions", 4)
    # A pair between sessions names the deadline its workflow counts: a reminder, a nudge, a lapse.
    assert replaced["next_deadline_kind"] in ("session_reminder", "stall_nudge", "stall_escalation", "lapse")


async def test_open_pair_shows_risk_and_deadline(store: PostgresEventStore, runner: ProjectionRunner):
    s = story.PairStory("p-open").nominate()
    await story.write(store, s)
    await runner.run_until_caught_up()
    row = await store.pool.fetchrow("SELECT * FROM pair_overview.pairs WHERE pair_id = 'p-open'")
    assert row["stage"] == "awaiting_motivation"
    assert row["next_deadline"] == s.steps[0].at + timedelta(days=3)  # the default reminder
    assert row["next_deadline_kind"] == "motivation_reminder"

    steps_before = len(s.steps)
    s.mentor_confirms()
    s.record("system", story.ev.PairFlaggedAtRisk(stage="mentee_invited", idle_since=s.clock))
    await story.write(store, s, from_step=steps_before)
    await runner.run_until_caught_up()
    row = await store.pool.fetchrow("SELECT * FROM pair_overview.pairs WHERE pair_id = 'p-open'")
    assert row["stage"] == "mentee_invited" and row["at_risk"] is True
    assert row["next_deadline_kind"] == "invitation_reminder"


async def test_funnel_counts_stages_outcomes_and_stage_times(store: PostgresEventStore,
                                                             runner: ProjectionRunner):
    await _seed(store)
    await runner.run_until_caught_up()
    outcomes = dict(await store.pool.fetch(
        "SELECT pair_id, outcome FROM programme_funnel.pairs WHERE programme_id = 'prog-A'"))
    assert outcomes == {
        "p-full": "completed", "p-declined": "mentee_declined", "p-mdeclined": "mentor_declined",
        "p-expired": "invitation_expired", "p-withdrawn": "withdrawn", "p-lapsed": "lapsed",
        "p-replaced": None,
    }
    visits = await store.pool.fetch(
        "SELECT stage, entered_at, left_at FROM programme_funnel.stage_visits "
        "WHERE pair_id = 'p-full' ORDER BY visit")
    assert [v["stage"] for v in visits] == [
        "awaiting_motivation", "mentee_invited", "preparation", "sessions", "final_evaluation",
        "follow_up", "completed"]
    assert all(v["left_at"] == n["entered_at"] for v, n in zip(visits, visits[1:], strict=False))
    assert visits[-1]["left_at"] is None


async def test_consent_register_records_every_invitation_and_answer(store: PostgresEventStore,
                                                                    runner: ProjectionRunner):
    await _seed(store)
    await runner.run_until_caught_up()
    entries = await store.pool.fetch(
        "SELECT pair_id, person_id, role, answer, channel, recorded_by FROM consent_register.entries "
        "WHERE pair_id IN ('p-full', 'p-declined', 'p-expired', 'p-withdrawn') ORDER BY position")
    by_pair: dict[str, list] = {}
    for e in entries:
        by_pair.setdefault(e["pair_id"], []).append(tuple(e.values())[1:])
    assert by_pair["p-full"] == [
        ("E100", "mentor", "motivation_confirmed", None, None),
        ("E900", "mentee", "invited", "email", None),
        ("E900", "mentee", "consent_given", "ui", "E900"),
    ]
    assert by_pair["p-declined"][-1] == ("E901", "mentee", "declined", "email", "hr-007")
    assert by_pair["p-expired"][-1] == ("E902", "mentee", "expired", None, None)
    assert by_pair["p-withdrawn"][-1][:3] == ("E903", "mentee", "withdrawn")


async def test_audit_trail_has_a_line_per_event_and_no_comment(store: PostgresEventStore,
                                                               runner: ProjectionRunner):
    stories = await _seed(store)
    await runner.run_until_caught_up()
    total = sum(s.event_count() for s in stories.values())
    assert await store.pool.fetchval("SELECT count(*) FROM audit_trail.entries") == total
    trail = await store.pool.fetch(
        "SELECT action, actor, summary FROM audit_trail.entries WHERE pair_id = 'p-full' "
        "ORDER BY position")
    assert trail[0]["action"] == "PairNominated" and trail[0]["actor"] == "hr-007"
    assert "mentor E100 and mentee E900" in trail[0]["summary"]
    assert trail[-1]["action"] == "PairCompleted"
    feedback = [t["summary"] for t in trail if t["action"] == "FeedbackGiven"]
    assert feedback[0] == "mentee rated session 1 4/5, engaging: yes"


async def test_mentor_recognition_credits_the_mentor_who_held_the_session(
        store: PostgresEventStore, runner: ProjectionRunner):
    await _seed(store)
    await runner.run_until_caught_up()
    mentors = {r["mentor_id"]: r for r in await store.pool.fetch(
        "SELECT * FROM mentor_recognition.mentors")}
    # E100 mentors p-full and p-other (3 sessions each), p-expired (none) and held session 1
    # of p-replaced before handing over to E105.
    assert (mentors["E100"]["pairs"], mentors["E100"]["sessions_given"]) == (4, 7)
    assert mentors["E100"]["rating_count"] == 7  # only the mentees' ratings
    topics = dict(await store.pool.fetch(
        "SELECT topic, sessions FROM mentor_recognition.topics WHERE mentor_id = 'E105'"))
    assert topics == {"mobile apps": 1, "social networks": 1}
    assert mentors["E105"]["sessions_given"] == 1 and mentors["E105"]["pairs"] == 1


async def test_session_calendar_lists_each_persons_sessions(store: PostgresEventStore,
                                                           runner: ProjectionRunner):
    await _seed(store)
    await runner.run_until_caught_up()
    sessions = await store.pool.fetch(
        "SELECT pair_id, session_no, mentor_id, status FROM session_calendar.sessions "
        "WHERE mentee_id = 'E905' ORDER BY session_no")
    assert [(s["session_no"], s["mentor_id"], s["status"]) for s in sessions] == [
        (1, "E100", "held"), (2, "E105", "held")]
    withdrawn = await store.pool.fetch(
        "SELECT session_no, status FROM session_calendar.sessions WHERE pair_id = 'p-withdrawn' "
        "ORDER BY session_no")
    assert [tuple(r.values()) for r in withdrawn] == [(1, "held"), (2, "cancelled")]


async def test_read_models_hold_no_names_and_no_comments(store: PostgresEventStore,
                                                         runner: ProjectionRunner):
    await store.pool.execute(
        "INSERT INTO people (employee_id, display_name, email) VALUES ('E100', 'Ada Martin', 'ada@x.test')")
    await store.pool.execute(
        "INSERT INTO private_notes (event_id, pair_id, author_id, body) "
        "VALUES (gen_random_uuid(), 'p-full', 'E900', 'I did not know how to install an app')")
    await _seed(store)
    await runner.run_until_caught_up()
    dump = await store.pool.fetchval(
        """SELECT string_agg(t::text, ' ') FROM (
             SELECT p::text AS t FROM pair_overview.pairs p UNION ALL
             SELECT a::text FROM audit_trail.entries a UNION ALL
             SELECT c::text FROM consent_register.entries c UNION ALL
             SELECT s::text FROM session_calendar.sessions s UNION ALL
             SELECT m::text FROM mentor_recognition.mentors m) x""")
    for secret in ("Ada", "ada@x.test", "install an app"):
        assert secret not in dump


async def test_programme_health_keeps_ratings_follow_ups_risk_spells_and_collective_sessions(
        store: PostgresEventStore, runner: ProjectionRunner):
    stories = await _seed(store)
    opened = NewEvent(event_id=uuid.uuid4(), event_type="ProgrammeOpened", schema_version=1,
                      payload={"programme_id": "prog-A", "hr_owners": ["hr-008", "hr-007"]})
    group = NewEvent(event_id=uuid.uuid4(), event_type="GroupSessionHeld", schema_version=1,
                     payload={"session_no": 1, "attended": ["E900", "E100", "E903"], "recorded_by": "hr-008",
                              "pairs_attending": ["pair-p-full", "pair-p-withdrawn"]})
    await store.append("programme-prog-A", 0, [opened, group], EventMetadata(actor="hr-008"))
    await runner.run_until_caught_up()
    db = store.pool

    owners = await db.fetchval("SELECT hr_owners FROM programme_health.programmes WHERE programme_id = 'prog-A'")
    assert owners == ["hr-008", "hr-007"]
    assert await db.fetchval("SELECT count(*) FROM programme_health.pairs") == len(stories)
    # p-full: the senior rated its sessions 4, 5, 3 and the mentor 4, 4, 4; both gave a final evaluation.
    ratings = await db.fetch("""SELECT kind, by_role, rating FROM programme_health.ratings
                                WHERE pair_id = 'p-full' ORDER BY position""")
    assert sorted(r["rating"] for r in ratings if (r["kind"], r["by_role"]) == ("session", "mentee")) == [3, 4, 5]
    assert sorted(r["rating"] for r in ratings if (r["kind"], r["by_role"]) == ("session", "mentor")) == [4, 4, 4]
    assert sum(1 for r in ratings if r["kind"] == "final") == 2
    follow_ups = await db.fetch("""SELECT days_after_end, by_role, still_using FROM programme_health.follow_ups
                                   WHERE pair_id = 'p-full' AND by_role = 'mentee' ORDER BY position""")
    assert [(f["days_after_end"], f["still_using"]) for f in follow_ups] == [(30, True), (90, True)]
    # p-lapsed was flagged at risk, then lapsed: one spell, from the flag to the end.
    spells = await db.fetch("SELECT spell, since, until FROM programme_health.risk_spells WHERE pair_id = 'p-lapsed'")
    lapsed = stories["lapsed"].steps
    flagged = next(s.at for s in lapsed if any(e.event_type == "PairFlaggedAtRisk" for e in s.events))
    assert [(s["spell"], s["since"], s["until"]) for s in spells] == [(1, flagged, lapsed[-1].at)]
    assert await db.fetchval("SELECT count(*) FROM programme_health.risk_spells WHERE pair_id <> 'p-lapsed'") == 0
    group_row = await db.fetchrow("SELECT programme_id, attendees, pairs FROM programme_health.group_sessions")
    assert tuple(group_row) == ("prog-A", 3, 2)
