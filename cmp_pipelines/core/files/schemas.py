"""The JSON Schemas (2020-12) that are the file contracts, loaded once per process."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import jsonschema

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"


@functools.cache
def schema(name: str) -> dict:
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))


@functools.cache
def ecma_regex(pattern: str) -> re.Pattern[str]:
    r"""`pattern` for Python's `re` with ECMA-262's `$`: the end of the input only. Python's `$` also matches
    before a final newline, so jsonschema's `re.search` let `"10.00\n"` through `^...$` (python-jsonschema
    issue #576; JSON-Schema-Test-Suite #283; fastjsonschema swapped `$` for `\Z` the same way). Every unescaped
    `$` outside a character class becomes `\Z`."""
    out, in_class, i = [], False, 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            if pattern[i + 1:i + 2] == "]":  # `[]...]` : a literal `]` first in the class
                out.append("[]")
                i += 2
                continue
        elif char == "$":
            char = r"\Z"
        out.append(char)
        i += 1
    return re.compile("".join(out))


def _pattern(validator, pattern: str, instance: object, schema: dict):
    if validator.is_type(instance, "string") and not ecma_regex(pattern).search(instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


EcmaValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _pattern})


@functools.cache
def validator(name: str, definition: str | None = None) -> jsonschema.Draft202012Validator:
    """A validator for a whole schema, or for one of its `$defs` (resolving `#/$defs/...` references), whose
    `pattern` keeps ECMA-262's meaning of `$` (see `ecma_regex`)."""
    root = schema(name)
    target = root if definition is None else {**root["$defs"][definition], "$defs": root["$defs"]}
    jsonschema.Draft202012Validator.check_schema(root)
    return EcmaValidator(target)


def first_error(name: str, document: object, definition: str | None = None) -> str | None:
    """The most relevant violation as 'path: message', or None when the document is valid."""
    error = jsonschema.exceptions.best_match(validator(name, definition).iter_errors(document))
    if error is None:
        return None
    where = ".".join(str(part) for part in error.absolute_path) or "(document)"
    return f"{where}: {error.message}"
