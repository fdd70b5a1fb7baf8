"""PostgreSQL errors that retrying cannot heal, turned into final activity failures.

A data error (SQLSTATE class 22: a character the encoding cannot hold, a value out of range) or a
broken constraint (class 23) comes back the same on every attempt. Left as is, Temporal would
retry the activity for ever and the pair, waiting on it, would stop answering. Marked
non-retryable with type `DATA_REFUSED`, the workflow refuses the action instead and goes on.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import asyncpg
from temporalio.exceptions import ApplicationError

from events.messages import DATA_REFUSED

P = ParamSpec("P")
R = TypeVar("R")


def refused_data_is_final(work: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Wrap an activity: a class 22 or 23 error fails it for good, naming the rule, not the value."""

    @functools.wraps(work)
    async def activity(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await work(*args, **kwargs)
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
            raise ApplicationError(describe(exc), type=DATA_REFUSED, non_retryable=True) from None

    return activity


# What each refusal means, in words; the rest of its class gets the class's words.
_MEANINGS = {
    "22001": "a text is longer than the database keeps",
    "22003": "a number is out of the range the database keeps",
    "22021": "a text holds a character the database cannot store",
    "22P05": "a text holds a character the database cannot store",
    "23502": "a required value is missing",
    "23505": "the same value is already recorded",
    "23514": "a value breaks a rule of the database",
}
_CLASSES = {"22": "a value the database cannot store", "23": "a value breaks a rule of the database"}


def describe(exc: asyncpg.PostgresError) -> str:
    """Which rule PostgreSQL applied, from the error's fields; never its detail (which quotes the
    value: personal data) nor the message of a class that may quote it."""
    code = exc.sqlstate or ""
    meaning = _MEANINGS.get(code) or _CLASSES.get(code[:2], "the database refused a value")
    where = ", ".join(f"{label} {value}" for label, value in (
        ("table", getattr(exc, "table_name", None)), ("column", getattr(exc, "column_name", None)),
        ("constraint", getattr(exc, "constraint_name", None))) if value)
    return f"{meaning} (SQLSTATE {code}" + (f"; {where}" if where else "") + ")"
