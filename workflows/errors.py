"""The errors HR reads in the Temporal UI: what was wrong, which field, what to do.

Each is an `ApplicationError` whose `type` is the class name, so a caller can tell them apart, and
which is never retried: retrying a wrong input or a rejected action gives the same answer. Messages
name fields and rules, never a person's name, e-mail or free text (they may end up in logs).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from temporalio.api.failure.v1 import ApplicationFailureInfo, Failure
from temporalio.exceptions import ApplicationError


class PairError(ApplicationError):
    """Base of the pair's HR-facing errors."""

    def __init__(self, message: str) -> None:
        kind = type(self).__name__
        super().__init__(message, type=kind, non_retryable=True)
        # Shown to HR as it is: the SDK sends an error's own failure record verbatim, so this
        # one carries no Python stack trace (with server file paths) into the UI or the CLI.
        self._failure = Failure(message=message, application_failure_info=ApplicationFailureInfo(
            type=kind, non_retryable=True))


class InvalidPairInput(PairError):
    """The start input does not describe a valid pair: the workflow fails at once."""


class InvalidProgrammeInput(PairError):
    """The start input does not describe a valid programme: the workflow fails at once."""


class PairAlreadyNominated(PairError):
    """The pair's event stream already exists: a pair is nominated once per programme."""


class InvalidUpdatePayload(PairError):
    """An update's payload does not decode into its form."""


class WrongStage(PairError):
    """The action belongs to another stage of the lifecycle."""


class PairIsPaused(PairError):
    """The action would move a paused pair forward: resume it first."""


class PairIsClosed(PairError):
    """The pair has ended: nothing more can be recorded."""


class NotAParticipant(PairError):
    """The person named is not the one the rule requires (the mentor, the mentee)."""


class UnknownSession(PairError):
    """No session has that number, or it is not in the state the action needs."""


class OutsideAvailability(PairError):
    """A session time falls outside the mentee's availability windows."""


class DataRefused(PairError):
    """The database refused a value of the action (an activity's final `DATA_REFUSED` error)."""


class LogMovedOn(PairError):
    """The log holds facts this run had not seen (a Reset brought the workflow back to an earlier
    point): the run has caught up with them, and the action, decided without them, is refused."""


class RuleViolation(PairError):
    """Any other domain rule: the message says which and what to do."""


# --- pydantic errors, rewritten for HR -----------------------------------------------------------

_FIELD_NAME = re.compile(r"[A-Za-z0-9_]{1,40}")
MAX_PROBLEMS = 10


def _where(loc: tuple[Any, ...], prefix: str = "") -> str:
    text = prefix
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            # A field name is the input's too (an unknown one is typed by the sender): only a
            # plain, short one is named back.
            name = str(part) if _FIELD_NAME.fullmatch(str(part)) else "(a field with an unusual name)"
            text += f".{name}" if text else name
    return text or "(the whole object)"


def _why(error: ErrorDetails) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a field of this form (check the spelling)"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a JSON object with named fields"
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return "must not be empty"
    if kind == "too_short" and ctx.get("min_length") == 1:
        return "needs at least one entry"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    if message.startswith("Input should be"):
        message = "should be" + message[len("Input should be"):]
    elif message and message[0].isupper() and not message[:2].isupper():
        message = message[0].lower() + message[1:]
    return message


def describe_validation_error(exc: ValidationError, prefix: str = "") -> list[str]:
    """One line per bad field: `where: why`. Input values are never echoed (personal data);
    past MAX_PROBLEMS, one line says how many more."""
    errors = exc.errors(include_url=False, include_input=False)
    lines = [f"{_where(tuple(err['loc']), prefix)}: {_why(err)}" for err in errors[:MAX_PROBLEMS]]
    if len(errors) > MAX_PROBLEMS:
        lines.append(f"... and {len(errors) - MAX_PROBLEMS} more problem(s)")
    return lines


def excerpt(value: object) -> str:
    """A value quoted back in a message: short, one line, and never an e-mail address."""
    text = str(value)
    if "@" in text:
        return "the value given"
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return repr(clean if len(clean) <= 40 else clean[:37] + "...")


def bullet_list(lines: list[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)
