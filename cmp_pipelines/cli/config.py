"""`config validate`: every file of the configuration folder checked against its model, without the store."""

from __future__ import annotations

from pathlib import Path

import click

from cmp_pipelines.core.settings import paths


def config_errors(config_dir: Path) -> list:
    """Every error of every configuration file: the core files and those the flows register."""
    import cmp_pipelines.defs.hardware_orders.config  # noqa: F401  (registers hardware_orders.yaml)
    from cmp_pipelines.core.config import check_config_dir

    return check_config_dir(config_dir)


def error_lines(config_dir: Path, errors: list) -> list[str]:
    """One line per error, the file named relative to the configuration folder (its path is said once)."""
    count = len({e.file for e in errors})
    head = f"{config_dir}: {len(errors)} configuration error(s) in {count} file(s)"
    return [head] + [f"  {e.file.name}: {e.path}: {e.why}" if e.path else f"  {e.file.name}: {e.why}" for e in errors]


def require_valid_config() -> Path:
    """The configuration folder, every file of it valid; otherwise a CLI error listing every mistake."""
    config_dir = paths().config_dir
    errors = config_errors(config_dir)
    if errors:
        raise click.ClickException("\n".join(error_lines(config_dir, errors)))
    return config_dir


@click.group("config")
def config() -> None:
    """Configuration files ($CMP_CONFIG_DIR, default ./config)."""


@config.command("validate")
def validate() -> None:
    """Check every configuration file against its model and list every error (exit 1 if any); the store is not
    opened, so this runs anywhere, e.g. in CI before a deployment."""
    from cmp_pipelines.core.config import CONFIG_FILES

    config_dir = paths().config_dir
    errors = config_errors(config_dir)
    if errors:
        for line in error_lines(config_dir, errors):
            click.echo(line, err=True)
        raise click.exceptions.Exit(1)
    click.echo(f"{config_dir}: {len(CONFIG_FILES)} configuration files valid ({', '.join(sorted(CONFIG_FILES))})")


@config.command("changes")
@click.option("--file", "file_name", help="Only this file, e.g. payment_terms.yaml.")
@click.option("--entry", help="Only this entry (a code, or a default's payment type).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON document: every change with before and after.")
def changes(file_name: str | None, entry: str | None, limit: int, as_json: bool) -> None:
    """Changes made through the Business Configuration console, newest first: who, when, what, before and after
    ($CMP_DATA_DIR/config_audit.sqlite)."""
    import json

    from cmp_pipelines.core.config_edit import ConfigAudit, audit_path

    path = audit_path(paths().data_dir)
    rows = ConfigAudit(path).changes(file_name, None, entry, limit) if path.exists() else []
    if as_json:
        keep = ("change_id", "changed_at", "actor", "security_level", "file", "section", "entry_id", "action",
                "changed_fields", "before", "after", "file_sha256")
        click.echo(json.dumps({"changes": [{k: r[k] for k in keep} for r in rows]}, indent=2, ensure_ascii=False))
        return
    if not rows:
        click.echo("no changes made through the console")
        return
    for r in rows:
        fields = ", ".join(f"{k}: {json.dumps((r['before'] or {}).get(k))} -> {json.dumps(r['after'].get(k))}"
                           for k in r["changed_fields"])
        level = f" ({r['security_level']})" if r["security_level"] else ""
        click.echo(f"#{r['change_id']} {r['changed_at']} {r['actor']}{level} {r['action']} {r['file']} "
                   f"{r['section']}[{r['entry_id']}]: {fields}")
