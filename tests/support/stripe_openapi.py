"""Requests and responses held to Stripe's published OpenAPI specification (tests/fixtures/stripe_openapi_subset.json,
pinned verbatim by tests/fixtures/trim_stripe_openapi.py from stripe/openapi).

OpenAPI 3.0 schemas become JSON Schemas the way Stripe's own mock server does it (stripe/stripe-mock
spec/validate.go): `nullable` adds `null` to `type`, and to `anyOf` as a branch; here also to `enum`, since Stripe's
published example objects carry `null` in nullable enums. jsonschema then validates.

Stripe takes form-encoded parameters (`a[b][0][c]=v`, every value a string): each is turned into the type its
schema names (integer, number, boolean; each `anyOf` branch tried in turn), as Stripe's server reads it, before
validation, so an unknown (at any depth) or missing parameter, a wrong type or enum value is caught. A response
is validated against the operation's schema for its status (`200`, else `default`: Stripe's error object).
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

from jsonschema import Draft202012Validator

SPEC = json.loads((Path(__file__).parents[1] / "fixtures" / "stripe_openapi_subset.json").read_text())
SOURCE = SPEC["info"]["x-cmp-source"]


class SpecViolation(AssertionError):
    """What Stripe's specification says a request or a response may not be."""


def json_schema(node, names: bool = False):
    """An OpenAPI 3.0 schema as JSON Schema (stripe-mock's getJSONSchemaForOpenAPI3Schema, plus nullable enums).
    `names`: the node maps names to schemas (`properties`, `schemas`, `paths`...), its keys are not keywords."""
    if isinstance(node, list):
        return [json_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    if names:
        return {k: json_schema(v) for k, v in node.items()}
    out = {k: json_schema(v, names=k in ("properties", "schemas", "paths", "responses", "content", "encoding"))
           for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "anyOf" in out:
            out["anyOf"] = [*out["anyOf"], {"type": "null"}]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def closed(schema):
    """Stripe refuses a parameter it does not know at any depth ("Received unknown parameter: a[b]"), while its
    specification declares `additionalProperties: false` only at the top: a request's objects are closed here."""
    if isinstance(schema, list):
        return [closed(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: ({n: closed(v) for n, v in schema[k].items()} if k == "properties" else closed(v))
           for k, v in schema.items()}
    if "properties" in schema and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    return out


ROOT = {"components": json_schema(SPEC["components"]), "paths": json_schema(SPEC["paths"], names=True)}
for _item in ROOT["paths"].values():
    for _op in _item.values():
        for _media in _op.get("requestBody", {}).get("content", {}).values():
            _media["schema"] = closed(_media["schema"])


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _at(pointer: str):
    node = ROOT
    for part in pointer.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


@cache
def _validator(pointer: str) -> Draft202012Validator:
    return Draft202012Validator({**ROOT, "$ref": pointer})


def _schema_validator(schema: dict) -> Draft202012Validator:
    return Draft202012Validator({**ROOT, **schema})


def operation(method: str, path: str) -> dict:
    try:
        return SPEC["paths"][path][method.lower()]
    except KeyError:
        raise SpecViolation(f"{method} {path} is not an operation of Stripe's API we pinned") from None


def _messages(validator: Draft202012Validator, value, prefix: str = "") -> list[str]:
    found = sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{prefix}{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:200]}" for e in found]


def coerce(value, schema: dict):
    """A form value (strings all the way down) as the JSON value its schema describes."""
    while "$ref" in schema:
        schema = _at(schema["$ref"])
    for branches in ("anyOf", "oneOf"):
        for branch in schema.get(branches, ()):
            candidate = coerce(value, branch)
            if _schema_validator(branch).is_valid(candidate):
                return candidate
    if isinstance(value, dict):
        properties, extra = schema.get("properties", {}), schema.get("additionalProperties")
        return {k: coerce(v, properties.get(k) or (extra if isinstance(extra, dict) else {})) for k, v in value.items()}
    if isinstance(value, list):
        return [coerce(v, schema.get("items", {})) for v in value]
    kinds = schema.get("type", ())
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if isinstance(value, str) and "integer" in kinds and re.fullmatch(r"-?[0-9]+", value):
        return int(value)
    if isinstance(value, str) and "number" in kinds and re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value):
        return float(value)
    if isinstance(value, str) and "boolean" in kinds and value in ("true", "false"):
        return value == "true"
    return value


def check_request(method: str, path: str, params: dict) -> None:
    """A decoded form body (POST) or query (GET) against the operation's requestBody schema or query parameters."""
    op = operation(method, path)
    if method == "GET":
        declared = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "query"}
        problems = [f"{name}: not a parameter of this operation" for name in sorted(set(params) - set(declared))]
        problems += [f"{name}: required" for name, p in sorted(declared.items())
                     if p.get("required") and name not in params]
        for name in sorted(set(params) & set(declared)):
            schema = json_schema(declared[name]["schema"])
            problems += _messages(_schema_validator(schema), coerce(params[name], schema), f"{name} ")
    else:
        pointer = _pointer("paths", path, method.lower(), "requestBody", "content",
                           "application/x-www-form-urlencoded", "schema")
        problems = _messages(_validator(pointer), coerce(params, _at(pointer)))
    if problems:
        raise SpecViolation(f"{method} {path} does not match Stripe's specification ({SOURCE['api_version']}): "
                            + "; ".join(problems[:10]))


def check_response(method: str, path: str, status: int, body: dict) -> None:
    """A response body against the operation's schema for that status (`200`, else Stripe's `default` error)."""
    op = operation(method, path)
    code = str(status) if str(status) in op["responses"] else "default"
    pointer = _pointer("paths", path, method.lower(), "responses", code, "content", "application/json", "schema")
    problems = _messages(_validator(pointer), body)
    if problems:
        raise SpecViolation(f"the {status} answer to {method} {path} does not match Stripe's specification "
                            f"({SOURCE['api_version']}): " + "; ".join(problems[:10]))


def check_object(name: str, value: dict) -> None:
    """A Stripe object (`event`, `payment_intent`...) against its schema in components/schemas."""
    problems = _messages(_validator(_pointer("components", "schemas", name)), value)
    if problems:
        raise SpecViolation(f"this {name} does not match Stripe's specification ({SOURCE['api_version']}): "
                            + "; ".join(problems[:10]))
