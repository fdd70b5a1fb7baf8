"""How Temporal payloads become Python values, and how a door reads what was typed into it.

Every client and worker of the project uses `DATA_CONVERTER`: pydantic models as JSON, plus one
rule inside workflows. A handler that declares `*payloads: RawValue` (the pair's start, every
update, the signal) receives each payload untouched, however many were sent and whatever bytes
they hold. Without it the SDK would decode them first, and a payload that is not JSON, or a count
the signature does not expect, would fail before any of our checks: a rejection with a Python
traceback for an update, a workflow task that fails for ever for the start or a signal.

`read_object` and `read_form` then turn those payloads into one JSON object or one form, or into
a refusal in words that names the door and the field, never echoing what was typed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError, ValidationInfo
from temporalio import workflow
from temporalio.common import RawValue
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import DataConverter

from workflows.errors import InvalidUpdatePayload, PairError, bullet_list, describe_validation_error


class PayloadConverter(PydanticPayloadConverter):
    """Pydantic's JSON converter; inside a workflow, an untyped handler gets raw payloads."""

    def from_payloads(self, payloads: Sequence[Any], type_hints: list[type] | None = None) -> list[Any]:
        # The SDK passes no type hints for a `*payloads` signature (and when the count sent
        # differs from the signature's): keep the payloads raw for the handler to read itself.
        if type_hints is None and (workflow.in_workflow() or workflow.unsafe.in_sandbox()):
            return [RawValue(payload) for payload in payloads]
        return super().from_payloads(payloads, type_hints)


DATA_CONVERTER = DataConverter(payload_converter_class=PayloadConverter)
"""The data converter of every Temporal client, worker and replayer of the project."""

AS_RECORDED: dict[str, Any] = {"as_recorded": True}
"""Validation context for what a pair already accepted (a replayed start or update, the state a
continued run carries): the checks added since it was accepted are not applied again, so a pair
replays as it ran. Each such check asks `checking_new_input` first."""


def checking_new_input(info: ValidationInfo) -> bool:
    return not (info.context or {}).get("as_recorded")


F = TypeVar("F", bound=BaseModel)
_KINDS = {list: "a list", str: "a text", int: "a number", float: "a number", bool: "true or false"}


def read_object(payloads: Sequence[Any], door: str, refusal: type[PairError] = InvalidUpdatePayload) -> dict[str, Any]:
    """The one JSON object sent through `door`, or `refusal` saying what was wrong with it.

    `door` starts every message and says what happened, e.g. "The update 'pause' was refused".
    """
    if not payloads:
        raise refusal(f"{door}: no input was sent, and it takes one JSON object (fields between "
                      "{ and }). Nothing was recorded.")
    if len(payloads) > 1:
        raise refusal(f"{door}: {len(payloads)} inputs were sent, and it takes one JSON object "
                      "(fields between { and }) holding every field. Nothing was recorded.")
    data = decode(payloads[0], door, refusal)
    if not isinstance(data, dict):
        kind = _KINDS.get(type(data), "empty (null)")
        raise refusal(f"{door}: its input must be one JSON object (fields between {{ and }}), "
                      f"not {kind}. Nothing was recorded.")
    return data


def decode(payload: Any, door: str, refusal: type[PairError]) -> Any:
    if not isinstance(payload, RawValue):
        return payload  # already decoded (a converter without the raw rule)
    encoding = payload.payload.metadata.get("encoding", b"")
    if encoding != b"json/plain":
        raise refusal(f"{door}: its input must be JSON, and it came in another encoding "
                      f"({_printable(encoding.decode('ascii', 'replace'))}). Nothing was recorded.")
    try:
        return workflow.payload_converter().from_payload(payload.payload, object)  # JSON, untyped
    except ValidationError as exc:
        problem = describe_validation_error(exc)[0].split(": ", 1)[-1]
        raise refusal(f"{door}: its input is not valid JSON ({problem}). Nothing was recorded.") from None
    except Exception:
        raise refusal(f"{door}: its input could not be read as JSON. Nothing was recorded.") from None


def read_form(form: type[F], payloads: Sequence[Any], door: str,
              refusal: type[PairError] = InvalidUpdatePayload, *, as_recorded: bool = False) -> F:
    """The payloads as `form`, or `refusal` listing each bad field (values never quoted).

    `as_recorded`: the input was accepted before (a replay): see `AS_RECORDED`."""
    data = read_object(payloads, door, refusal)
    try:
        return form.model_validate(data, context=AS_RECORDED if as_recorded else None)
    except ValidationError as exc:
        lines = describe_validation_error(exc)
        raise refusal(f"{door}: {len(lines)} problem(s) in its input:\n{bullet_list(lines)}\n"
                      "Correct these fields and send it again; nothing was recorded.") from None
    except (ArithmeticError, TypeError):
        # A check that overflowed on a value at the edge of a type: still the input's fault.
        raise refusal(f"{door}: a value of its input is out of range. Nothing was recorded.") from None


def _printable(text: str) -> str:
    return "".join(c if c.isalnum() or c in "/-_." else "?" for c in text[:24]) or "none"
