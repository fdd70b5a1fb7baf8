"""Write the JSON Schemas of the start inputs, generated from their forms: the pair's
(`workflows.inputs.PairInput`) and the programme's (`workflows.programme_inputs.ProgrammeInput`).

    python -m workflows.schema          write schemas/pair-input.schema.json, programme-input.schema.json
    python -m workflows.schema --check  exit 1 if a committed file is out of date
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from workflows.inputs import PairInput
from workflows.programme_inputs import ProgrammeInput

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
SCHEMA_FILE = SCHEMAS / "pair-input.schema.json"
PROGRAMME_SCHEMA_FILE = SCHEMAS / "programme-input.schema.json"
SCHEMA_PATH = "/formats/pair-input.schema.json"
"""Where the audit API serves the same schema, without a token: refused starts point HR there."""
PROGRAMME_SCHEMA_PATH = "/formats/programme-input.schema.json"


def _schema(form: type[BaseModel]) -> str:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **form.model_json_schema()}
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def pair_input_schema() -> str:
    return _schema(PairInput)


def programme_input_schema() -> str:
    return _schema(ProgrammeInput)


def main(argv: list[str]) -> int:
    stale = 0
    for path, text in ((SCHEMA_FILE, pair_input_schema()), (PROGRAMME_SCHEMA_FILE, programme_input_schema())):
        if "--check" in argv:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                print(f"{path} is out of date: run python -m workflows.schema", file=sys.stderr)
                stale += 1
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
