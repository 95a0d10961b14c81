"""Editing the Payments module's configuration from the console: the same validation as the loaders, written back
to the YAML the flows read, every change audited.

A change is checked by the loaders themselves: the candidate file goes into a temporary copy of the configuration
folder and `check_config_dir` runs over it, so a console edit can never save what `config validate` would refuse
(including rules across files). Only the edited entry's text changes: it is located by PyYAML's node marks and
replaced (or a new one appended after the last entry), so every comment and every other entry stays byte for
byte; the result is parsed again and must equal the intended document, or nothing is written. (ruamel.yaml's
round trip would re-flow the hand-wrapped entries, so it is not used.) The write is a temporary file renamed over
the original, inside the audit store's write transaction, which also serialises console writers across processes
and makes the version check (an entry's etag) and the write one step: a concurrent edit is refused, never
silently overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml

from cmp_pipelines.core.config import (
    MANDATE_REVISION_CODES_FILE,
    PAYMENT_TERMS_FILE,
    PAYMENT_TYPES,
    REJECTION_CODES_FILE,
    ConfigError,
    ConfigFile,
    check_config_dir,
    read_yaml,
)
from cmp_pipelines.core.db.sqlite import LocalSqlite

# ---- what each screen edits ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One input of a screen. kind: text, int (blank: left out when optional), choice, multi (a list of choices),
    event (a {type, code} pair; both blank: left out)."""

    name: str
    label: str
    kind: str = "text"
    choices: tuple[str, ...] = ()
    optional: bool = False
    help: str = ""
    choices_from: str | None = None  # a choice among the entries of another screen (a default's payment term)


@dataclass(frozen=True)
class Screen:
    slug: str
    title: str
    config_file: ConfigFile
    section: str  # the list in the file
    key: str  # the field naming an entry (never changed by an edit: other entries and files refer to it)
    fields: tuple[Field, ...]

    @property
    def file(self) -> str:
        return self.config_file.name


EVENT_HELP = "workflow event type and code, upper-case identifiers"
SCREENS: dict[str, Screen] = {s.slug: s for s in (
    Screen("payment-terms", "Payment terms", PAYMENT_TERMS_FILE, "payment_terms", "code", (
        Field("code", "Code", help="1-3 upper-case letters or digits, unique"),
        Field("description", "Description", help="at most 30 characters"),
        Field("days_to_pay", "Days to pay", "int", help="0-365: days the customer has to settle an invoice"),
    )),
    Screen("payment-term-defaults", "Payment term defaults", PAYMENT_TERMS_FILE, "payment_term_defaults",
           "payment_type", (
        Field("payment_type", "Payment type", "choice", PAYMENT_TYPES, help="one default per payment type"),
        Field("code", "Payment term", "choice", choices_from="payment-terms", help="one of the payment terms"),
        Field("security_levels", "Security levels", "multi", help="the levels that may use this default"),
    )),
    Screen("rejection-codes", "Recurring payment rejection codes", REJECTION_CODES_FILE, "rejection_codes", "code", (
        Field("code", "Code", help="1-8 letters or digits, unique"),
        Field("description", "Description", help="at most 60 characters"),
        Field("reason_type", "Reason type"),
        Field("reason_code", "Reason code"),
        Field("decline", "Decline", "choice", ("SOFT", "HARD")),
        Field("retries", "Retries", "int", optional=True, help="soft declines only: 0-10"),
        Field("suspension_days", "Suspension days", "int", optional=True, help="soft declines only: 0-90"),
        Field("retry_event", "Retry event", "event", optional=True, help="soft declines: " + EVENT_HELP),
        Field("cancellation_event", "Cancellation event", "event", optional=True,
              help="soft declines, when the retries run out: " + EVENT_HELP),
        Field("refund_event", "Refund event", "event", optional=True, help="hard declines: " + EVENT_HELP),
    )),
    Screen("mandate-revision-codes", "Mandate revision codes", MANDATE_REVISION_CODES_FILE, "mandate_revision_codes",
           "code", (
        Field("code", "Code", help="1-8 letters or digits, unique (the ADDACS reason code)"),
        Field("name", "Name", help="at most 60 characters"),
        Field("action", "Action", "choice", ("AMEND", "CANCEL")),
        Field("reason_type", "Reason type"),
        Field("reason_code", "Reason code"),
        Field("event", "Workflow event", "event", help=EVENT_HELP),
    )),
)}


def etag(entry: Mapping) -> str:
    """The version of one entry: what the form was opened on must still be what the file holds when saved."""
    return hashlib.sha256(json.dumps(entry, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def entries(config_dir: Path, screen: Screen) -> list[dict]:
    items = read_yaml(config_dir / screen.file).get(screen.section) or []
    return [item for item in items if isinstance(item, dict)]


def find(config_dir: Path, screen: Screen, entry_id: str) -> dict | None:
    return next((e for e in entries(config_dir, screen) if str(e.get(screen.key)) == entry_id), None)


def entry_from_form(screen: Screen, form: Mapping[str, list[str]]) -> dict:
    """The entry as the YAML would hold it. Nothing is judged here: an integer field that is not digits stays a
    string, so the loader's own words ("must be an integer, got 'x'") come back."""
    entry: dict = {}
    for f in screen.fields:
        values = form.get(f.name, [])
        if f.kind == "multi":
            entry[f.name] = [v for v in values if v]
            continue
        if f.kind == "event":
            kind, code = (form.get(f"{f.name}.type", [""])[0].strip(), form.get(f"{f.name}.code", [""])[0].strip())
            if kind or code or not f.optional:
                entry[f.name] = {"type": kind, "code": code}
            continue
        value = values[0].strip() if values else ""
        if f.kind == "int":
            if value == "" and f.optional:
                continue
            entry[f.name] = int(value) if re.fullmatch(r"-?[0-9]{1,9}", value) else value
        else:
            entry[f.name] = value
    return entry


# ---- the text of one entry -------------------------------------------------------------------------------------

WRAP = 118


def _pair(name: str, value: object) -> str:
    """`name: value` as it stands inside a flow mapping (PyYAML quotes what a flow context needs quoted); codes in
    double quotes, as the shipped files write them."""
    if name == "code" and isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_]*", value):
        return f'code: "{value}"'
    text = yaml.safe_dump({name: value}, default_flow_style=True, sort_keys=False, width=10**9, allow_unicode=True)
    return text.strip()[1:-1]


def entry_text(entry: Mapping, indent: int) -> str:
    """`{a: 1, b: x}` wrapped between pairs at WRAP columns; continuation lines start inside the brace."""
    lines, line = [], "{"
    pairs = [_pair(k, v) for k, v in entry.items()]
    for i, pair in enumerate(pairs):
        piece = pair + ("}" if i == len(pairs) - 1 else ",")
        if len(line) > 1 and indent + len(line) + 1 + len(piece) > WRAP:
            lines.append(line)
            line = " " * (indent + 1) + piece
        else:
            line += ("" if line.endswith("{") else " ") + piece
    lines.append(line if pairs else "{}")
    return "\n".join(lines)


class EditImpossible(Exception):
    """The file's layout is not one the console can change in place (nothing is written)."""


def _sequence(text: str, section: str) -> yaml.SequenceNode:
    root = yaml.compose(text)
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if key.value == section and isinstance(value, yaml.SequenceNode):
                return value
    raise EditImpossible(f"the file has no list {section!r} to edit")


def replace_entry(text: str, section: str, index: int, entry: Mapping) -> str:
    item = _sequence(text, section).value[index]
    start, end = item.start_mark.index, item.end_mark.index
    while end > start and text[end - 1] in " \t\r\n":
        end -= 1
    return text[:start] + entry_text(entry, item.start_mark.column) + text[end:]


def append_entry(text: str, section: str, entry: Mapping) -> str:
    seq = _sequence(text, section)
    if seq.flow_style or not seq.value:
        raise EditImpossible(f"{section} is not a block list with at least one entry; add the first one by hand")
    last = seq.value[-1]
    line_start = text.rfind("\n", 0, last.start_mark.index) + 1
    prefix = text[line_start:last.start_mark.index]
    if not re.fullmatch(r" *- *", prefix):
        raise EditImpossible(f"the last entry of {section} does not start its own line")
    line_end = text.find("\n", last.end_mark.index - 1)
    line_end = len(text) if line_end < 0 else line_end
    return text[:line_end] + "\n" + prefix + entry_text(entry, len(prefix)) + text[line_end:]


# ---- the audit store ---------------------------------------------------------------------------------------------

AUDIT_SCHEMA = """
CREATE TABLE config_changes (
    change_id INTEGER PRIMARY KEY,
    changed_at TEXT NOT NULL,
    actor TEXT NOT NULL,
    security_level TEXT,
    file TEXT NOT NULL,
    section TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    action TEXT NOT NULL,
    changed_fields TEXT NOT NULL,
    before_json TEXT,
    after_json TEXT NOT NULL,
    file_sha256 TEXT NOT NULL
);
CREATE INDEX config_changes_entry ON config_changes (file, section, entry_id, change_id);
CREATE TABLE console_sessions (
    sid_sha256 TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at INTEGER NOT NULL
)
"""


class ConfigAudit(LocalSqlite):
    """`$CMP_DATA_DIR/config_audit.sqlite`: who changed which entry when, before and after. SQLite like the API's own
    store, so a console save never waits on a pipeline run holding `cmp.duckdb`."""

    def __init__(self, path: Path):
        super().__init__(path, AUDIT_SCHEMA)

    # Console sign-ins: the cookie is signed, and its session must also still be here, so signing out ends it even
    # for a copy of the cookie. Only a hash of the session id is kept.
    def open_session(self, sid: str, client_id: str, expires_at: int) -> None:
        with self.write() as con:
            con.execute("DELETE FROM console_sessions WHERE expires_at < ?", [int(datetime.now(UTC).timestamp())])
            con.execute("INSERT INTO console_sessions VALUES (?, ?, ?, ?)",
                        [hashlib.sha256(sid.encode()).hexdigest(), client_id,
                         datetime.now(UTC).isoformat(timespec="seconds"), expires_at])

    def session_open(self, sid: str, client_id: str) -> bool:
        row = self.connection().execute(
            "SELECT expires_at FROM console_sessions WHERE sid_sha256 = ? AND client_id = ?",
            [hashlib.sha256(sid.encode()).hexdigest(), client_id]).fetchone()
        return row is not None and row[0] >= datetime.now(UTC).timestamp()

    def close_session(self, sid: str) -> None:
        self.write_one("DELETE FROM console_sessions WHERE sid_sha256 = ?", [hashlib.sha256(sid.encode()).hexdigest()])

    def changes(self, file: str | None = None, section: str | None = None, entry_id: str | None = None,
                limit: int = 200) -> list[dict]:
        sql, params = "SELECT * FROM config_changes WHERE 1=1", []
        for column, value in (("file", file), ("section", section), ("entry_id", entry_id)):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        rows = self.connection().execute(sql + " ORDER BY change_id DESC LIMIT ?", [*params, limit]).fetchall()
        return [{**dict(r), "before": json.loads(r["before_json"]) if r["before_json"] else None,
                 "after": json.loads(r["after_json"]), "changed_fields": json.loads(r["changed_fields"])}
                for r in rows]


# ---- saving -------------------------------------------------------------------------------------------------------


@dataclass
class Rejected(Exception):
    """The loaders refuse the change: `fields` by form field, `other` for the rest (other entries, other files)."""

    fields: dict[str, str] = field(default_factory=dict)
    other: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "; ".join([f"{k}: {v}" for k, v in self.fields.items()] + self.other)


class Conflict(Exception):
    """The entry changed (or was added, or disappeared) since the form was opened."""

    def __init__(self, message: str, current: dict | None):
        super().__init__(message)
        self.message, self.current = message, current


@dataclass(frozen=True)
class Saved:
    change_id: int
    entry: dict
    etag: str


def _errors_for(screen: Screen, index: int, errors: list[ConfigError], config_dir: Path) -> Rejected:
    rejected = Rejected()
    names = {f.name for f in screen.fields} | {f"{f.name}.{p}" for f in screen.fields if f.kind == "event"
                                               for p in ("type", "code")}
    prefix = f"{screen.section}[{index}]"
    for error in errors:
        path = error.path or ""
        if error.file.name == screen.file and (path == prefix or path.startswith(prefix + ".")
                                               or path.startswith(prefix + "[")):
            inner = re.sub(r"\[\d+\]", "", path[len(prefix) + 1:])
            name = inner if inner in names else inner.split(".")[0]
            if name in names or name in {f.name for f in screen.fields}:
                rejected.fields.setdefault(name, error.why)
                continue
            rejected.other.append(error.why if not inner else f"{inner}: {error.why}")
        else:
            shown = str(error).replace(str(error.file.parent) + os.sep, "")
            rejected.other.append(shown)
    return rejected


def _validate(config_dir: Path, screen: Screen, candidate: str, index: int) -> None:
    """Every loader over a copy of the folder holding the candidate; errors the folder already had are not this
    change's fault and do not block it."""
    with tempfile.TemporaryDirectory(prefix="cmp-config-") as tmp:
        copy = Path(tmp) / "config"
        shutil.copytree(config_dir, copy, ignore=shutil.ignore_patterns(".*"))
        before = {str(e).replace(str(copy), "") for e in check_config_dir(copy)}
        (copy / screen.file).write_text(candidate, encoding="utf-8")
        errors = [e for e in check_config_dir(copy) if str(e).replace(str(copy), "") not in before]
    if errors:
        raise _errors_for(screen, index, errors, config_dir)


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save(config_dir: Path, audit: ConfigAudit, screen: Screen, entry: dict, *, actor: str, security_level: str | None,
         entry_id: str | None = None, expected_etag: str | None = None, now: datetime | None = None) -> Saved:
    """Add (`entry_id` None) or replace the entry; Rejected with the loaders' words, Conflict when it changed since
    `expected_etag` was read. The file is only written when the whole folder still validates."""
    path = config_dir / screen.file
    with audit.write() as con:
        text = path.read_text(encoding="utf-8")
        document = read_yaml(path)
        items = list(document.get(screen.section) or [])
        ids = [str(i.get(screen.key)) if isinstance(i, dict) else None for i in items]
        if entry_id is None:
            before, index = None, len(items)
            if str(entry.get(screen.key)) in ids:
                current = items[ids.index(str(entry.get(screen.key)))]
                raise Conflict(f"{screen.key} {entry.get(screen.key)} already exists in {screen.file}", current)
        else:
            if entry_id not in ids:
                raise Conflict(f"{entry_id} is no longer in {screen.file}", None)
            index = ids.index(entry_id)
            before = items[index]
            if expected_etag != etag(before):
                raise Conflict(f"{entry_id} was changed by someone else since you opened it; the values now saved "
                               "are shown: apply your change to them again", before)
            entry = {**entry, screen.key: before[screen.key]}  # the key never changes: other entries refer to it
        candidate_items = [*items[:index], entry, *items[index + 1:]]
        try:
            candidate = (append_entry(text, screen.section, entry) if entry_id is None
                         else replace_entry(text, screen.section, index, entry))
            parsed = yaml.safe_load(candidate)
        except yaml.YAMLError as exc:
            raise EditImpossible(f"the edited {screen.file} would not parse: {exc}") from exc
        if parsed != {**document, screen.section: candidate_items}:
            raise EditImpossible(f"{screen.file} could not be edited in place without changing other entries")
        _validate(config_dir, screen, candidate, index)
        changed = sorted(k for k in set(entry) | set(before or {}) if (before or {}).get(k) != entry.get(k))
        at = (now or datetime.now(UTC)).isoformat(timespec="seconds")
        change_id = con.execute(
            "INSERT INTO config_changes (changed_at, actor, security_level, file, section, entry_id, action, "
            "changed_fields, before_json, after_json, file_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [at, actor, security_level, screen.file, screen.section, str(entry[screen.key]),
             "ADD" if before is None else "EDIT", json.dumps(changed),
             json.dumps(before, ensure_ascii=False) if before is not None else None,
             json.dumps(entry, ensure_ascii=False), hashlib.sha256(candidate.encode()).hexdigest()]).lastrowid
        _write_atomically(path, candidate)
    return Saved(change_id, entry, etag(entry))


def audit_path(data_dir: Path) -> Path:
    return data_dir / "config_audit.sqlite"

