"""What a chaos run does: its size, its rhythm of kills, and the pairs it drives.

Every pair gets its own mentor and mentee (M001/S001, M002/S002, ...) and one HR person shared
by all, a policy of seconds where the lifecycle waits on timers, and one or two sessions.
The names are fake and only ids appear in the output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from datetime import time as clock
from typing import Any
from zoneinfo import ZoneInfo

HR_ID = "HRCHAOS"
TRAINING_MODULES = ("reverse-mentoring-basics", "confidentiality")
SESSION_TOPICS = ["social networks"]
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


@dataclass(frozen=True)
class ChaosConfig:
    """One chaos run. The defaults are the full run; `ci()` is the small one pytest runs."""

    pairs: int = 30
    kills: int = 30
    clients: int = 12
    kill_every: tuple[float, float] = (4.0, 8.0)  # seconds between kills, uniform
    # Measured from the moment a driver picks the pair up. Generous: a worker killed while it
    # runs a notice or register_people holds the pair until that activity's 2-minute
    # start-to-close timeout, and that is a stall to report, not a stuck pair.
    pair_deadline_s: float = 360.0
    session_lead_s: float = 12.0  # a session is proposed this far ahead
    reminder_before_s: int = 5  # policy session_reminder_before, so the reminder timer fires
    reminder_grace_s: float = 20.0  # after a session started, how long to wait for a late reminder
    first_follow_up_s: int = 3
    second_follow_up_s: int = 6
    poll_interval_s: float = 0.5  # the `state` query, as often as an open Web UI page
    rpc_timeout_s: float = 5.0  # one query or update RPC
    attempt_timeout_s: float = 15.0  # one update attempt, before it is sent again with the same id
    seed: int | None = None
    extra_policy: dict[str, str] = field(default_factory=dict)

    @classmethod
    def ci(cls, **changes: Any) -> ChaosConfig:
        """The pytest variant: 12 pairs, 10 kills, three to four minutes on a 2-core machine.

        Its deadline leaves room for one 2-minute activity timeout (a worker killed during a
        notice or register_people) on a loaded machine; with shorter activity timeouts, lower it.
        """
        values: dict[str, Any] = dict(pairs=12, kills=10, clients=12, kill_every=(2.0, 4.0),
                                      pair_deadline_s=240.0, session_lead_s=10.0,
                                      reminder_before_s=4)
        values.update(changes)
        return cls(**values)

    def policy(self) -> dict[str, str]:
        """Seconds where the lifecycle waits on a timer; the other waits keep their defaults
        (days), so they never fire during a run."""
        return {
            "session_reminder_before": f"PT{self.reminder_before_s}S",
            # Closed early by the two evaluations; long enough that a stalled driver never
            # sees the window close instead (which would change the pair's timeline).
            "final_evaluation_within": "PT10M",
            "first_follow_up_after": f"PT{self.first_follow_up_s}S",
            "second_follow_up_after": f"PT{self.second_follow_up_s}S",
            # The pair completes when both answer the second follow-up; the window is only a
            # backstop, long enough never to close first.
            "follow_up_answer_within": "PT2M",
            **self.extra_policy,
        }


def sessions_for(index: int) -> int:
    """One or two sessions, alternating, so both shapes of the timeline are exercised."""
    return 1 + index % 2


def mentor_id(index: int) -> str:
    return f"M{index:03d}"


def mentee_id(index: int) -> str:
    return f"S{index:03d}"


def mentee_zone(now: datetime | None = None) -> str:
    """A time zone where the next hour stays within today, so a session soon fits a window that
    ends at 23:59 local time."""
    for name in ("UTC", "Asia/Tokyo", "America/New_York"):
        local = (now or datetime.now(ZoneInfo("UTC"))).astimezone(ZoneInfo(name)).time()
        if clock(0, 5) <= local <= clock(22, 0):
            return name
    raise AssertionError("unreachable: these zones are never all near midnight")


def pair_input(config: ChaosConfig, programme_id: str, index: int) -> dict[str, Any]:
    """The start input of pair `index`, as HR would type it in the Web UI."""
    number = f"{index:03d}"
    return {
        "programme_id": programme_id,
        "mentor": {
            "employee_id": mentor_id(index), "display_name": f"Chaos Mentor {number}",
            "email": f"chaos.mentor.{number}@example.com", "time_zone": "Europe/Paris",
            "topics_mastered": ["social networks", "mobile apps"],
        },
        "mentee": {
            "employee_id": mentee_id(index), "display_name": f"Chaos Senior {number}",
            "email": f"chaos.senior.{number}@example.com", "time_zone": mentee_zone(),
            # Every day, all day: a session a few seconds ahead always fits.
            "availability": [{"weekday": day, "start": "00:00", "end": "23:59"} for day in WEEKDAYS],
            "topics_wished": ["protecting personal data"],
        },
        "topics": ["social networks", "protecting personal data"],
        "sessions_planned": sessions_for(index),
        "nominated_by": {"employee_id": HR_ID, "display_name": "Chaos HR",
                         "email": "chaos.hr@example.com"},
        "training_modules": list(TRAINING_MODULES),
        "policy": config.policy(),
    }
