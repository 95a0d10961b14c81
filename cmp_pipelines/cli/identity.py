"""Who runs a set-up command: the operator named by $CMP_OPERATOR, at the level config/operators.yaml gives.

A refusal exits with status 2 and names the rule, so a script can tell "not allowed" (2) from "failed" (1)."""

from __future__ import annotations

import click

from cmp_pipelines.core.settings import paths


class Forbidden(click.ClickException):
    exit_code = 2


def authorized(operation: str) -> tuple[str, str]:
    """(operator name, security level) when the operator may run `operation`; otherwise exit 2."""
    from cmp_pipelines.core.config import ConfigError
    from cmp_pipelines.core.security import Refused, authorize_operator

    try:
        return authorize_operator(paths().config_dir, operation)
    except Refused as exc:
        raise Forbidden(f"refused: {exc.message}") from None
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None
