"""Who may record which act of a pair: `recorded_by` must be someone the act belongs to.

Participants record their own acts (the mentor's motivation and feedback, the senior's consent and
feedback); HR acts are recorded by the pair's HR: the person who nominated it or one of its
`hr_team`. HR may also record some acts on a participant's behalf (the senior's written answer to
the invitation, a session the senior cancelled by phone); never a participant's feedback, nor the
mentor's motivation.

Checked by the update validators, never by their handlers: handlers run again on every replay,
and a pair whose acts were recorded before these rules must replay as it ran. A validator's
refusal records nothing anywhere. The signal, which has no validator, checks in its handler
behind the patch `signal-checks-who`.

The limit, said plainly: `recorded_by` is typed by whoever sends the update. Anyone with write
access to the Temporal namespace can type another person's id; production restricts that access
(README, "Who may record what").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from workflows.errors import NotAParticipant
from workflows.pair_state import PairState

MENTOR, MENTEE, HR = "mentor", "mentee", "hr"
PARTICIPANTS = (MENTOR, MENTEE, HR)

# Who may record each update; acts whose author depends on a field are decided in `check`.
_MAY_RECORD: dict[str, tuple[str, ...]] = {
    "confirm_motivation": (MENTOR,),
    "decline_mentoring": (MENTOR,),
    "accept_invitation": (MENTEE, HR),
    "decline_invitation": (MENTEE, HR),
    "agree_curriculum": PARTICIPANTS,
    "complete_training_module": (MENTOR, HR),
    "onboard_mentee": (MENTEE, HR),
    "sign_off_mentor": (HR,),
    "propose_session": PARTICIPANTS,
    "confirm_session": PARTICIPANTS,
    "reschedule_session": PARTICIPANTS,
    "record_session_held": PARTICIPANTS,
    "record_no_show": PARTICIPANTS,
    "pause": PARTICIPANTS,
    "resume": PARTICIPANTS,
    "replace_mentor": (HR,),
    "extend": (HR,),
}


def roles_of(state: PairState, person_id: str) -> set[str]:
    roles = set()
    if person_id == state.mentor_id:
        roles.add(MENTOR)
    if person_id == state.mentee_id:
        roles.add(MENTEE)
    if person_id == state.hr_id or person_id in state.hr_team:
        roles.add(HR)
    return roles


def who_may(update: str, request: Any) -> tuple[str, ...]:
    """The roles whose person may record this update with this payload."""
    match update:
        case "give_feedback" | "give_final_evaluation":
            return (request.by_role,)  # an opinion is its author's own
        case "answer_follow_up":
            return (request.by_role, HR)  # HR may pass on an answer given by phone or mail
        case "cancel_session":
            return (HR,) if request.cancelled_by == HR else (request.cancelled_by, HR)
        case "withdraw":
            return (request.role,)  # a withdrawal is its author's own, HR withdrawing as 'hr'
    return _MAY_RECORD[update]


def check(state: PairState, update: str, request: Any) -> None:
    """Raise NotAParticipant unless `request.recorded_by` may record `update` on this pair."""
    allowed = who_may(update, request)
    if roles_of(state, request.recorded_by) & set(allowed):
        return
    raise NotAParticipant(
        f"{request.recorded_by} may not record '{update}' for this pair: it is recorded by "
        f"{_people(state, allowed)}. Nothing was recorded.")


def not_hr(state: PairState, person_id: str, who: str) -> None:
    """The pair's HR records the pair's HR acts, so it is never a participant too."""
    if HR in roles_of(state, person_id):
        raise NotAParticipant(f"{person_id} is HR for this pair and cannot be {who}: choose someone "
                              "else, or take them off the pair's HR first. Nothing was recorded.")


def _people(state: PairState, roles: Iterable[str]) -> str:
    names = []
    for role in roles:
        if role == HR:
            team = ", ".join([state.hr_id, *state.hr_team])
            names.append(f"the pair's HR ({team})")
        else:
            names.append(f"the {role} ({state.person_of(role)})")
    return " or ".join(names)
