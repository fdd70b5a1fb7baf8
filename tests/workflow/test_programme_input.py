"""The programme's start input and enrolment forms: the README's example is valid, the published
schema is the forms', and each wrong input is refused naming its field, in words for HR."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from workflows.programme_inputs import EnrolSenior, NominateMentors, ProgrammeInput
from workflows.schema import PROGRAMME_SCHEMA_FILE, programme_input_schema

EXAMPLE = json.loads((Path(__file__).resolve().parents[2] / "examples" / "programme-input.json").read_text())
WINDOW = {"weekday": "tuesday", "start": "09:00", "end": "12:00"}
SENIOR = {"employee_id": "E0007", "display_name": "Bernard Dupont", "email": "bernard.dupont@example.com",
          "time_zone": "Europe/Paris", "availability": [WINDOW], "topics_wished": ["privacy"],
          "management_chain": ["E0001"]}
MENTOR = {"employee_id": "E1042", "display_name": "Léa Martin", "email": "lea.martin@example.com",
          "time_zone": "Europe/Paris", "availability": [WINDOW], "topics_offered": ["privacy", "social-networks"],
          "management_chain": ["E0500", "E0007"], "capacity": 2}


def _refusal(form: Any, data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as refused:
        form.model_validate(data)
    return str(refused.value)


def test_the_example_is_valid_and_the_published_schema_is_up_to_date():
    programme = ProgrammeInput.model_validate(EXAMPLE)
    assert [t.id for t in programme.topics] == ["social-networks", "privacy", "consumer-app", "ai-assistants"]
    assert programme.unknown_topics(["privacy", "cooking"]) == ["cooking"]
    assert PROGRAMME_SCHEMA_FILE.read_text(encoding="utf-8") == programme_input_schema(), (
        "schemas/programme-input.schema.json is out of date: run python -m workflows.schema")


@pytest.mark.parametrize(("change", "words"), [
    ({"dates": {"enrolment_closes": "2027-03-01", "matching_on": "2027-02-01", "sessions_end": "2027-06-30"}},
     "enrolment_closes <= matching_on < sessions_end"),
    ({"topics": [{"id": "privacy", "label": "A"}, {"id": "privacy", "label": "B"}]}, "each catalogue id once"),
    ({"topics": [{"id": "Social Networks", "label": "Social networks"}]}, "catalogue id"),
    ({"hr_owners": []}, "hr_owners"),
    ({"matching": {"min_weekly_overlap_minutes": -5}}, "min_weekly_overlap_minutes"),
])
def test_a_wrong_programme_input_is_refused_naming_the_field(change: dict[str, Any], words: str):
    data = copy.deepcopy(EXAMPLE)
    data.update(change)
    assert words in _refusal(ProgrammeInput, data)


def test_hr_nominates_mentors_in_bulk_each_once():
    nominated = NominateMentors.model_validate({"recorded_by": "HR001", "mentors": [MENTOR]})
    assert nominated.mentors[0].capacity == 2
    twice = {"recorded_by": "HR001", "mentors": [MENTOR, MENTOR]}
    assert "each employee once" in _refusal(NominateMentors, twice)


def test_a_senior_enrols_of_their_own_will_never_on_hr_s_word():
    own = EnrolSenior.model_validate({"recorded_by": "E0007", "senior": SENIOR,
                                      "request": {"channel": "self_service", "requested_on": "2027-01-10"}})
    assert own.senior.topics_wished == ["privacy"]
    written = EnrolSenior.model_validate({"recorded_by": "HR001", "senior": SENIOR,
                                          "request": {"channel": "letter", "requested_on": "2027-01-08"}})
    assert written.request.channel == "letter"
    on_hr_word = {"recorded_by": "HR001", "senior": SENIOR,
                  "request": {"channel": "self_service", "requested_on": "2027-01-10"}}
    assert "never on HR's word" in _refusal(EnrolSenior, on_hr_word)
    spoken = {"recorded_by": "HR001", "senior": SENIOR, "request": {"channel": "in_person", "requested_on": "2027-01-10"}}
    assert "written request" in _refusal(EnrolSenior, spoken)
    self_by_mail = {"recorded_by": "E0007", "senior": SENIOR, "request": {"channel": "email", "requested_on": "2027-01-10"}}
    assert "self_service" in _refusal(EnrolSenior, self_by_mail)


def test_the_readme_s_update_examples_are_accepted_by_their_forms():
    """The README's block of programme updates, as HR pastes them in the UI: each is valid."""
    from workflows import programme_inputs as forms
    from workflows.inputs import ConfirmMotivation

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    block = readme.split("The programme's updates as typed in the UI's Update dialog")[1].split("```")[1]
    examples: dict[str, str] = {}
    for line in block.strip().splitlines():
        if line[:1].strip():
            name, _, text = line.partition(" ")
            examples[name] = text.strip()
        else:
            examples[name] += line.strip()
    form_of = {"nominate_mentors": forms.NominateMentors, "confirm_programme_motivation": ConfirmMotivation,
               "enrol_senior": forms.EnrolSenior, "withdraw_from_programme": forms.WithdrawFromProgramme,
               "suggest_matches": forms.SuggestMatches, "accept_matches": forms.AcceptMatches,
               "propose_group_session": forms.ProposeGroupSession, "record_group_attendance": forms.RecordGroupAttendance,
               "rate_group_session": forms.RateGroupSession, "cancel_group_session": forms.CancelGroupSession,
               "extend_pairs": forms.ExtendPairs, "end_sessions": forms.EndSessions}
    assert set(examples) == set(form_of), "every programme update has its example, and no other"
    for name, text in examples.items():
        form_of[name].model_validate(json.loads(text))
