"""Deterministic orchestration: the `MentoringPair` and `MentoringProgramme` workflows, their pure
models and rules.

`WORKFLOWS` lists the workflow classes for the worker; it is loaded on first use so that importing
a model module (say `workflows.inputs` from the CLI) does not import the workflow itself.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "WORKFLOWS":
        from workflows.pair import MentoringPair
        from workflows.programme import MentoringProgramme

        return [MentoringPair, MentoringProgramme]
    raise AttributeError(f"module 'workflows' has no attribute {name!r}")
