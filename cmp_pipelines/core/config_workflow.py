"""What happens after a workflow event (`config/workflow_actions.yaml`) and who gets operational alerts
(`config/alerts.yaml`). Typed models like every file of `config/`; a
communication names a template of `config/templates/` and an unknown or broken template is an error on `init`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, model_validator

from cmp_pipelines.core.config import (
    FEEDS,
    IDENTIFIER,
    ConfigError,
    ConfigFile,
    Email,
    Entries,
    FileModel,
    Problems,
    between,
    fail,
    matches,
    non_empty,
    one_of,
    read_yaml,
    register,
)
from cmp_pipelines.core.templates import Templates

ACTIONS = ("communication", "webhook", "operator_task", "none")
WILDCARD = "*"
TEMPLATE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,59}$")


@dataclass(frozen=True)
class WorkflowAction:
    event_type: str
    event_code: str  # or "*": every code of the type without an entry of its own
    action: str  # COMMUNICATION, WEBHOOK, OPERATOR_TASK, NONE
    target: str | None  # the template, the URL or the task queue


@dataclass(frozen=True)
class WorkflowActions:
    actions: dict[tuple[str, str], WorkflowAction]
    max_attempts: int
    retry_minutes: int

    def action_for(self, event_type: str, event_code: str) -> WorkflowAction | None:
        return self.actions.get((event_type, event_code)) or self.actions.get((event_type, WILDCARD))


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        fail(f"must be an http(s) URL without credentials, got {value!r}")
    return value


EventCode = Annotated[str, matches(r"\*|[A-Z][A-Z0-9_]{0,39}",
                                   lambda v: f"must be an upper-case identifier or '*', got {v!r}")]


class ActionEntry(FileModel):
    event_type: Annotated[str, matches(IDENTIFIER, lambda v: f"must be an upper-case identifier, got {v!r}")]
    event_code: EventCode
    action: one_of(*ACTIONS)
    template: Annotated[str, matches(TEMPLATE_NAME, "must be lower-case letters, digits and _")] | None = None
    url: Annotated[str, AfterValidator(_url)] | None = None
    queue: Annotated[str, matches(IDENTIFIER, "must be an upper-case identifier")] | None = None

    @model_validator(mode="after")
    def _target(self) -> ActionEntry:
        needs = {"communication": "template", "webhook": "url", "operator_task": "queue"}.get(self.action)
        for name in ("template", "url", "queue"):
            if name == needs and getattr(self, name) is None:
                fail(f"a {self.action} action needs its {name}", name)
            if name != needs and getattr(self, name) is not None:
                fail(f"a {self.action} action has no {name}; remove it", name)
        return self

    def target(self) -> str | None:
        return self.template or self.url or self.queue


class WorkflowActionsFile(FileModel):
    max_attempts: Annotated[int, between(1, 20)] = 5
    retry_minutes: Annotated[int, between(1, 1440)] = 5
    actions: Annotated[list[ActionEntry], non_empty("needs at least one action")]


def _build_actions(parsed: WorkflowActionsFile, problems: Problems, _: object) -> WorkflowActions:
    actions: dict[tuple[str, str], WorkflowAction] = {}
    for index, a in enumerate(parsed.actions):
        key = (a.event_type, a.event_code)
        if key in actions:
            problems.add(("actions", index, "event_code"), f"{a.event_type}/{a.event_code} has two actions")
        actions[key] = WorkflowAction(a.event_type, a.event_code, a.action.upper(), a.target())
    return WorkflowActions(actions, parsed.max_attempts, parsed.retry_minutes)


class _ActionsFile(ConfigFile):
    """Also checks each communication's template in `<config>/templates/` (the model alone cannot see it)."""

    def run(self, config_dir: Path, partners: dict | None = None):
        value, errors = super().run(config_dir, partners)
        if errors:
            return None, errors
        file = config_dir / self.name
        document = read_yaml(file)
        templates = Templates(config_dir / "templates")
        names = set(templates.names())
        checked: dict[str, list[str]] = {}
        found = []
        for index, entry in enumerate(document.get("actions", [])):
            if isinstance(entry, dict) and entry.get("action") == "communication":
                name = entry["template"]
                if name not in checked:
                    checked[name] = templates.problems(name, names)
                for why in checked[name]:
                    found.append(self._error(file, document, ("actions", index, "template"), why))
        return (None, found) if found else (value, [])



WORKFLOW_ACTIONS_FILE = register(_ActionsFile("workflow_actions.yaml", WorkflowActionsFile, _build_actions,
                                              {"actions": Entries("event_code", "actions[{id}]")}))


def load_workflow_actions(config_dir: Path) -> WorkflowActions:
    return WORKFLOW_ACTIONS_FILE.load(config_dir)


# ---- alerts.yaml ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertRecipients:
    default: tuple[str, ...]
    feeds: dict[str, tuple[str, ...]]

    def for_feed(self, feed: str | None) -> tuple[str, ...]:
        return self.feeds.get(feed or "", self.default) or self.default


class AlertsFile(FileModel):
    default_recipients: Annotated[list[Email], non_empty("needs at least one recipient")]
    feeds: dict[str, Annotated[list[Email], non_empty("needs at least one recipient")]] = {}


def _build_alerts(parsed: AlertsFile, problems: Problems, _: object) -> AlertRecipients:
    for feed in parsed.feeds:
        if feed not in FEEDS:
            problems.add(("feeds", feed), f"unknown feed; known feeds: {', '.join(FEEDS)}")
    return AlertRecipients(tuple(parsed.default_recipients), {k: tuple(v) for k, v in parsed.feeds.items()})


ALERTS_FILE = register(ConfigFile("alerts.yaml", AlertsFile, _build_alerts, {"feeds": "section"}))


def load_alerts(config_dir: Path) -> AlertRecipients:
    return ALERTS_FILE.load(config_dir)


__all__ = ["ConfigError", "WorkflowAction", "WorkflowActions", "AlertRecipients", "load_workflow_actions",
           "load_alerts"]
