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
