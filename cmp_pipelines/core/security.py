"""Security levels that come from configuration, never from the caller.

`config/security.yaml` lists the levels and, for every guarded set-up operation, the levels allowed to call it.
An API client's level is in `config/api_clients.yaml`; a CLI operator's in `config/operators.yaml`, found by the
identity in `$CMP_OPERATOR`. Payment term defaults (payment_terms.yaml) still name who may use them when an account
is created. Anything missing (no identity, an unknown operator, a client without a level) is refused: a level
nobody configured is never assumed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from cmp_pipelines.core.config import (
    PAYMENT_TERMS_FILE,
    SECURITY_LEVEL,
    ConfigError,
    ConfigFile,
    Entries,
    FileModel,
    Keyed,
    Problems,
    matches,
    non_empty,
    read_yaml,
    register,
)

OPERATOR_ENV = "CMP_OPERATOR"
OPERATIONS = ("CREATE_ACCOUNT", "SET_PAYMENT_TYPE", "REGISTER_CARD", "CREATE_MANDATE", "CHANGE_MANDATE",
              "APPROVE_REFUND", "UPDATE_ACCOUNT", "ISSUE_INVOICE", "VIEW_CONFIG", "EDIT_CONFIG")
OPERATOR_NAME = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")

Level = Annotated[str, matches(SECURITY_LEVEL, lambda v: f"{v!r} is not a security level name (A-Z, 0-9, _)")]


class Refused(PermissionError):
    """A call the caller's security level does not allow; the message names the rule (API 403, CLI exit 2)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class SecurityConfig:
    levels: tuple[str, ...]
    operations: dict[str, tuple[str, ...]]

    def authorize(self, who: str, level: str | None, operation: str) -> None:
        allowed = self.operations.get(operation, ())
        if level is None:
            raise Refused(f"{who} has no security level in configuration, so it may not {operation}")
        if level not in allowed:
            raise Refused(f"{who} (security level {level}) may not {operation}: config/security.yaml allows "
                          f"{', '.join(allowed) or 'nobody'}")


class SecurityFile(FileModel):
    security_levels: Annotated[list[Level], non_empty("name at least one security level")]
    operations: dict[str, Annotated[list[Level], non_empty("at least one security level must be allowed")]]


def _build_security(parsed: SecurityFile, problems: Problems, _: object) -> SecurityConfig:
    levels = tuple(parsed.security_levels)
    for name, allowed in parsed.operations.items():
        if name not in OPERATIONS:
            problems.add(("operations", name), f"is not an operation; use {', '.join(OPERATIONS)}")
        for level in allowed:
            if level not in levels:
                problems.add(("operations", name), f"{level!r} is not one of security_levels ({', '.join(levels)})")
    for name in OPERATIONS:
        if name not in parsed.operations:
            problems.add(("operations",), f"{name} has no rule; every operation names the levels allowed")
    return SecurityConfig(levels, {k: tuple(v) for k, v in parsed.operations.items()})


SECURITY_FILE = register(ConfigFile("security.yaml", SecurityFile, _build_security,
                                    {"operations": Keyed("operations[{id}]")}))


class OperatorEntry(FileModel):
    name: Annotated[str, matches(OPERATOR_NAME, "must be 2-64 of a-z 0-9 . _ - starting with a letter")]
    security_level: Level


class OperatorsFile(FileModel):
    operators: list[OperatorEntry]


def _build_operators(parsed: OperatorsFile, problems: Problems, _: object) -> dict[str, str]:
    operators: dict[str, str] = {}
    for index, o in enumerate(parsed.operators):
        if o.name in operators:
            problems.add(("operators", index, "name"), "is defined twice")
        operators[o.name] = o.security_level
    return operators


OPERATORS_FILE = register(ConfigFile("operators.yaml", OperatorsFile, _build_operators,
                                     {"operators": Entries("name")}))


def load_security(config_dir: Path) -> SecurityConfig:
    return SECURITY_FILE.load(config_dir)


def operator_identity(config_dir: Path) -> tuple[str, str]:
    """(name, security level) of the operator in $CMP_OPERATOR, as config/operators.yaml has it."""
    name = os.environ.get(OPERATOR_ENV, "").strip()
    if not name:
        raise Refused(f"no operator identity: set {OPERATOR_ENV} to your name in config/operators.yaml")
    operators = OPERATORS_FILE.load(config_dir)
    if name not in operators:
        shown = name if OPERATOR_NAME.fullmatch(name) else "(not an operator name)"
        raise Refused(f"operator {shown} is not in config/operators.yaml")
    return name, operators[name]


def authorize_operator(config_dir: Path, operation: str) -> tuple[str, str]:
    """The operator's identity, once its level is allowed to run `operation`."""
    name, level = operator_identity(config_dir)
    load_security(config_dir).authorize(f"operator {name}", level, operation)
    return name, level


def unknown_payment_term_levels(config_dir: Path) -> list[ConfigError]:
    """Payment term defaults name levels of security.yaml: a misspelt one would silently let nobody at that level use
    the default. A rule across two files, so `check_config_dir` (config validate, init, the console) runs it."""
    security, errors = SECURITY_FILE.run(config_dir)
    file = config_dir / PAYMENT_TERMS_FILE.name
    try:
        document = read_yaml(file)
    except ConfigError:
        return []
    if errors or security is None:
        return []
    found = []
    for index, default in enumerate(document.get("payment_term_defaults") or []):
        levels = default.get("security_levels") if isinstance(default, dict) else None
        for level in levels if isinstance(levels, list) else []:
            if isinstance(level, str) and SECURITY_LEVEL.fullmatch(level) and level not in security.levels:
                code = default.get("code")
                found.append(ConfigError(file, code if isinstance(code, str) else f"payment_term_defaults[{index}]",
                                         "security_levels", f"{level!r} is not one of security.yaml's security_levels "
                                                            f"({', '.join(security.levels)})",
                                         f"payment_term_defaults[{index}].security_levels"))
    return found
