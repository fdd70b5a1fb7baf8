"""Write the JSON Schema of the pair's start input, generated from `workflows.inputs.PairInput`.

    python -m workflows.schema          write schemas/pair-input.schema.json
    python -m workflows.schema --check  exit 1 if the committed file is out of date
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from workflows.inputs import PairInput

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schemas" / "pair-input.schema.json"
SCHEMA_PATH = "/formats/pair-input.schema.json"
"""Where the audit API serves the same schema, without a token: refused starts point HR there."""


def pair_input_schema() -> str:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **PairInput.model_json_schema()}
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = pair_input_schema()
    if "--check" in argv:
        if not SCHEMA_FILE.exists() or SCHEMA_FILE.read_text(encoding="utf-8") != text:
            print(f"{SCHEMA_FILE} is out of date: run python -m workflows.schema", file=sys.stderr)
            return 1
        return 0
    SCHEMA_FILE.parent.mkdir(parents=True, exist_ok=True)
    SCHEMA_FILE.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
