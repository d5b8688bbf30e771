"""results.json: a sweep's verdicts for machines, schema-versioned, with a JSON Schema shipped beside this module.

`validate` checks a document against the subset of JSON Schema that results.schema.json uses (type, enum, const,
properties, required, additionalProperties, items, minimum, $ref to #/$defs), so no extra dependency is needed.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

from mupbench.store import atomic_write

SCHEMA_ID = "mupbench.results/3"
SCHEMA_FILE = Path(__file__).with_name("results.schema.json")

_TYPES = {
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "boolean": lambda x: isinstance(x, bool),
    "integer": lambda x: isinstance(x, int) and not isinstance(x, bool),
    "number": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x),
    "null": lambda x: x is None,
}


def results_document(sweep) -> dict:
    """The results.json document of a loaded sweep (reports.sweep.SweepData)."""
    return {
        "schema": SCHEMA_ID,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(sweep.generated_at)),
        "sweep": sweep.meta(),
        "verdicts": sweep.entries,
    }


def write_results(path: str | Path, document: dict) -> Path:
    return atomic_write(path, json.dumps(document, indent=1, ensure_ascii=False, allow_nan=False) + "\n")


def load_schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text())


def validate(document, schema: dict | None = None) -> list[str]:
    """Every violation of `schema` (default: results.schema.json) in `document`, as 'path: problem'; empty if valid."""
    schema = load_schema() if schema is None else schema
    errors: list[str] = []
    _check(document, schema, schema, "$", errors)
    return errors


def _check(value, schema: dict, root: dict, where: str, errors: list[str]) -> None:
    if "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/$defs/"):
            raise ValueError(f"unsupported $ref {ref!r}: only #/$defs/<name>")
        _check(value, root["$defs"][ref.split("/")[-1]], root, where, errors)
        return
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_TYPES[t](value) for t in types):
            errors.append(f"{where}: expected {' or '.join(types)}, got {json.dumps(value)[:60]}")
            return
    if "const" in schema and value != schema["const"]:
        errors.append(f"{where}: expected {schema['const']!r}, got {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if "minimum" in schema and _TYPES["number"](value) and value < schema["minimum"]:
        errors.append(f"{where}: {value} < minimum {schema['minimum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{where}: missing {key!r}")
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                _check(item, props[key], root, f"{where}.{key}", errors)
            elif extra is False:
                errors.append(f"{where}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                _check(item, extra, root, f"{where}.{key}", errors)
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _check(item, schema["items"], root, f"{where}[{i}]", errors)
