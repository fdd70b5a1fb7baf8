"""The README is the user's door: every update, signal and query of `MentoringPair` is documented
there, and every JSON example it shows is accepted by the model the workflow decodes it into."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from temporalio import workflow

from workflows.inputs import SIGNAL_FORMS, UPDATE_FORMS, PairInput
from workflows.pair import MentoringPair

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
DEFINITION = workflow._Definition.from_class(MentoringPair)
# A table row: | `name` [/ `name`] | when | `{json}` [/ `{json}`] |
_ROW = re.compile(r"^\| `(?P<names>[a-z_]+`(?: / `[a-z_]+`)*) \| [^|]+ \| (?P<examples>`\{.*\}`) \|$",
                  re.MULTILINE)


def _documented_updates() -> dict[str, dict]:
    found = {}
    for row in _ROW.finditer(README):
        names = re.findall(r"[a-z_]+", row["names"])
        examples = [json.loads(text) for text in re.findall(r"`(\{.*?\})`(?: /|$)", row["examples"])]
        assert len(names) == len(examples), f"README row for {names} lacks an example each"
        found.update(zip(names, examples, strict=True))
    return found


def test_every_update_is_documented_with_an_example():
    assert sorted(_documented_updates()) == sorted(DEFINITION.updates) == sorted(UPDATE_FORMS)


@pytest.mark.parametrize("name", sorted(DEFINITION.updates))
def test_each_update_example_is_accepted_by_its_model(name: str):
    model = UPDATE_FORMS[name]
    example = _documented_updates()[name]
    accepted = model.model_validate(example)  # raises, naming the field, if the README is wrong
    assert accepted.recorded_by == example["recorded_by"]  # every action says who entered it


def test_the_signal_and_query_are_documented():
    (signal,) = DEFINITION.signals
    (query,) = DEFINITION.queries
    assert f"`{signal}`" in README and f"`{query}`" in README
    example = re.search(rf"`{signal}`[^`]*`(\{{.*?\}})`", README, re.DOTALL)
    assert sorted(DEFINITION.signals) == sorted(SIGNAL_FORMS)
    model = SIGNAL_FORMS[signal]
    model.model_validate(json.loads(example[1]))


def test_the_start_example_is_the_example_file_and_valid():
    shown = re.search(r"```json\n(\{.*?\n\})\n```", README, re.DOTALL)
    example_file = Path(__file__).resolve().parents[2] / "examples" / "pair-input.json"
    assert json.loads(shown[1]) == json.loads(example_file.read_text(encoding="utf-8"))
    PairInput.model_validate(json.loads(shown[1]))
