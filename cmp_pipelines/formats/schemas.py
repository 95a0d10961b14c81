"""The JSON Schemas (2020-12) that are the file contracts, loaded once per process."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jsonschema

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"


@functools.cache
def schema(name: str) -> dict:
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))


@functools.cache
def validator(name: str, definition: str | None = None) -> jsonschema.Draft202012Validator:
    """A validator for a whole schema, or for one of its `$defs` (resolving `#/$defs/...` references)."""
    root = schema(name)
    target = root if definition is None else {**root["$defs"][definition], "$defs": root["$defs"]}
    jsonschema.Draft202012Validator.check_schema(root)
    return jsonschema.Draft202012Validator(target)


def first_error(name: str, document: object, definition: str | None = None) -> str | None:
    """The most relevant violation as 'path: message', or None when the document is valid."""
    error = jsonschema.exceptions.best_match(validator(name, definition).iter_errors(document))
    if error is None:
        return None
    where = ".".join(str(part) for part in error.absolute_path) or "(document)"
    return f"{where}: {error.message}"
