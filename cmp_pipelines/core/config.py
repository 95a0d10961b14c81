"""Business configuration from `config/*.yaml`, validated on load: every error names file, entry and field."""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path

import yaml

from cmp_pipelines.core.probes import PROBES_BY_ID

FEEDS = ("nrp", "card_rejections", "addacs", "arudd", "warehouse_dispatch", "device_enrolment")
PAYMENT_TYPES = ("MANUAL", "RECURRING_CARD", "DIRECT_DEBIT")
CODE = re.compile(r"^[A-Za-z0-9]{1,8}$")
IDENTIFIER = re.compile(r"^[A-Z][A-Z0-9_]{0,39}$")
PARTNER_ID = re.compile(r"^[A-Z][A-Z0-9_]{1,31}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ConfigError(ValueError):
    def __init__(self, file: Path, entry: str, field: str, why: str):
        super().__init__(f"{file}: entry {entry!r}: field {field!r}: {why}")
        self.file, self.entry, self.field, self.why = file, entry, field, why


DEFAULT_SETTLE_SECONDS = 5  # a file unchanged this long is complete, for a partner that does not rename uploads
DEFAULT_UPLOAD_SUFFIXES = (".part", ".tmp")
DEFAULT_DUPLICATE_WINDOW_DAYS = 30
UPLOAD_SUFFIX = re.compile(r"^\.[A-Za-z0-9_~-]{1,15}$")


@dataclass(frozen=True)
class Partner:
    partner_id: str
    name: str
    feeds: tuple[str, ...]
    # How we know an upload is complete: "settle" (size and change time unchanged for settle_seconds) or
    # "rename" (the partner writes under one of upload_suffixes and renames the finished file).
    upload_completion: str = "settle"
    settle_seconds: int = DEFAULT_SETTLE_SECONDS
    upload_suffixes: tuple[str, ...] = DEFAULT_UPLOAD_SUFFIXES
    # NRP records repeating a record id (same account and amount) of this partner's files loaded within this
    # many days are held as suspected duplicates; 0 turns the check off.
    duplicate_window_days: int = DEFAULT_DUPLICATE_WINDOW_DAYS


@dataclass(frozen=True)
class ProbeConfig:
    probe_id: str
    threshold: int
    window_hours: int
    recipients: tuple[str, ...]


def _load(file: Path, top: str) -> object:
    return read_document(file, top)[top]


def read_document(file: Path, top: str) -> dict:
    """The whole YAML mapping, read once, holding at least the `top` key."""
    if not file.exists():
        raise ConfigError(file, "-", "-", "file not found")
    try:
        document = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(file, "-", "-", f"not valid YAML: {exc}") from exc
    if not isinstance(document, dict) or top not in document:
        raise ConfigError(file, "-", top, f"the file must be a mapping with a top-level {top!r} key")
    return document


def require_field(file: Path, entry: str, raw: dict, field: str, kind: type) -> object:
    """`raw[field]`, which must be present and of type `kind` (an int is never a bool)."""
    if field not in raw:
        raise ConfigError(file, entry, field, "is required")
    value = raw[field]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(file, entry, field, f"must be an integer, got {value!r}")
    if kind is not int and not isinstance(value, kind):
        raise ConfigError(file, entry, field, f"must be a {kind.__name__}, got {value!r}")
    return value


def reject_unknown_fields(file: Path, entry: str, raw: dict, allowed: set[str]) -> None:
    """A ConfigError for the first field of `raw` not in `allowed`."""
    for field in raw:
        if field not in allowed:
            raise ConfigError(file, entry, str(field), f"unknown field; allowed: {', '.join(sorted(allowed))}")


def load_partners(config_dir: Path) -> dict[str, Partner]:
    file = config_dir / "partners.yaml"
    entries = _load(file, "partners")
    if not isinstance(entries, list):
        raise ConfigError(file, "-", "partners", "must be a list of partner entries")
    partners: dict[str, Partner] = {}
    for index, raw in enumerate(entries):
        entry = f"partners[{index}]"
        if not isinstance(raw, dict):
            raise ConfigError(file, entry, "-", "must be a mapping")
        if isinstance(raw.get("partner_id"), str):
            entry = raw["partner_id"]
        reject_unknown_fields(file, entry, raw, {"partner_id", "name", "feeds", "upload_completion",
                                                 "settle_seconds", "upload_suffixes", "duplicate_window_days"})
        partner_id = require_field(file, entry, raw, "partner_id", str)
        if not PARTNER_ID.match(partner_id):
            raise ConfigError(file, entry, "partner_id", "must be 2-32 of A-Z, 0-9, _ starting with a letter")
        if partner_id in partners:
            raise ConfigError(file, entry, "partner_id", "is defined twice")
        feeds = require_field(file, entry, raw, "feeds", list)
        for feed in feeds:
            if feed not in FEEDS:
                raise ConfigError(file, entry, "feeds", f"unknown feed {feed!r}; known feeds: {', '.join(FEEDS)}")
        name = raw.get("name", partner_id)
        if not isinstance(name, str):
            raise ConfigError(file, entry, "name", f"must be a string, got {name!r}")
        partners[partner_id] = Partner(partner_id, name, tuple(feeds), *_upload_completion(file, entry, raw),
                                       _duplicate_window(file, entry, raw))
    return partners


def _upload_completion(file: Path, entry: str, raw: dict) -> tuple[str, int, tuple[str, ...]]:
    """(upload_completion, settle_seconds, upload_suffixes) of a partner entry, each checked."""
    mode = raw.get("upload_completion", "settle")
    if mode not in ("settle", "rename"):
        raise ConfigError(file, entry, "upload_completion", f"must be settle or rename, got {mode!r}")
    settle, suffixes = DEFAULT_SETTLE_SECONDS, DEFAULT_UPLOAD_SUFFIXES
    if mode == "settle":
        if "upload_suffixes" in raw:
            raise ConfigError(file, entry, "upload_suffixes", "only a partner with upload_completion rename has "
                                                              "upload suffixes")
        if "settle_seconds" in raw:
            settle = require_field(file, entry, raw, "settle_seconds", int)
            if not 0 <= settle <= 3600:
                raise ConfigError(file, entry, "settle_seconds", f"must be between 0 and 3600, got {settle}")
    else:
        if "settle_seconds" in raw:
            raise ConfigError(file, entry, "settle_seconds", "a partner that renames finished uploads does not "
                                                             "wait for them to settle; remove this field")
        if "upload_suffixes" in raw:
            listed = require_field(file, entry, raw, "upload_suffixes", list)
            if not listed:
                raise ConfigError(file, entry, "upload_suffixes", "must name at least one suffix, e.g. [.part]")
            for suffix in listed:
                if not isinstance(suffix, str) or not UPLOAD_SUFFIX.match(suffix):
                    raise ConfigError(file, entry, "upload_suffixes",
                                      f"{suffix!r} must be a dot and 1-15 of A-Z a-z 0-9 _ ~ -, e.g. .part")
            suffixes = tuple(listed)
    return mode, settle, suffixes


def _duplicate_window(file: Path, entry: str, raw: dict) -> int:
    if "duplicate_window_days" not in raw:
        return DEFAULT_DUPLICATE_WINDOW_DAYS
    days = require_field(file, entry, raw, "duplicate_window_days", int)
    if not 0 <= days <= 400:
        raise ConfigError(file, entry, "duplicate_window_days", f"must be between 0 and 400, got {days}")
    return days


def load_probes(config_dir: Path) -> dict[str, ProbeConfig]:
    file = config_dir / "probes.yaml"
    entries = _load(file, "probes")
    if not isinstance(entries, dict):
        raise ConfigError(file, "-", "probes", "must be a mapping of probe id to settings")
    probes: dict[str, ProbeConfig] = {}
    for probe_id, raw in entries.items():
        entry = str(probe_id)
        if probe_id not in PROBES_BY_ID:
            raise ConfigError(file, entry, "-", f"unknown probe; known probes: {', '.join(sorted(PROBES_BY_ID))}")
        if not isinstance(raw, dict):
            raise ConfigError(file, entry, "-", "must be a mapping")
        reject_unknown_fields(file, entry, raw, {"threshold", "window_hours", "recipients"})
        threshold = require_field(file, entry, raw, "threshold", int)
        if threshold < 0:
            raise ConfigError(file, entry, "threshold", f"must be zero or more, got {threshold}")
        window_hours = require_field(file, entry, raw, "window_hours", int)
        if not 1 <= window_hours <= 24 * 31:
            raise ConfigError(file, entry, "window_hours", f"must be between 1 and 744, got {window_hours}")
        recipients = raw.get("recipients", [])
        if not isinstance(recipients, list):
            raise ConfigError(file, entry, "recipients", "must be a list of e-mail addresses")
        for address in recipients:
            if not isinstance(address, str) or not EMAIL.match(address):
                raise ConfigError(file, entry, "recipients", f"{address!r} is not an e-mail address")
        kind = PROBES_BY_ID[probe_id].kind
        if kind == "alert" and not recipients:
            raise ConfigError(file, entry, "recipients", "an alert probe needs at least one recipient")
        if kind == "sla" and recipients:
            raise ConfigError(file, entry, "recipients", "an SLA probe never notifies; remove its recipients")
        probes[probe_id] = ProbeConfig(probe_id, threshold, window_hours, tuple(recipients))
    missing = sorted(set(PROBES_BY_ID) - set(probes))
    if missing:
        raise ConfigError(file, missing[0], "-", "probe is not configured (every probe needs a threshold)")
    return probes


@dataclass(frozen=True)
class WorkflowEvent:
    event_type: str
    event_code: str


@dataclass(frozen=True)
class RejectionCode:
    """A recurring payment rejection code (Payments module): how a declined card payment or debit is handled."""

    code: str
    description: str
    reason_type: str
    reason_code: str
    decline: str  # SOFT (retried, account suspended for a while) or HARD (never retried)
    retries: int
    suspension_days: int
    retry_event: WorkflowEvent | None
    cancellation_event: WorkflowEvent | None
    refund_event: WorkflowEvent | None


@dataclass(frozen=True)
class RejectionConfig:
    default_payment_type: str  # what a hard decline reverts an account to
    codes: dict[str, RejectionCode]
    bacs_return_codes: dict[str, str] = dataclass_field(default_factory=dict)  # ARUDD four-digit returnCode -> code
    # what a return under each ARUDD rejection code does to its mandate: KEEP, CANCEL (collection stops) or HOLD
    # (no collection until an ADDACS amendment or an operator releases it)
    mandate_actions: dict[str, str] = dataclass_field(default_factory=dict)

    @property
    def card_codes(self) -> dict[str, RejectionCode]:
        """The codes a card provider declines with: every code but those ARUDD return codes map to."""
        direct_debit = set(self.bacs_return_codes.values()) | set(self.mandate_actions)
        return {code: c for code, c in self.codes.items() if code not in direct_debit}


def read_workflow_event(file: Path, entry: str, raw: dict, field: str) -> WorkflowEvent | None:
    """The optional `{type, code}` workflow event in `raw[field]`, or None when absent."""
    value = raw.get(field)
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"type", "code"}:
        raise ConfigError(file, entry, field, "must be a mapping with exactly 'type' and 'code'")
    for part in ("type", "code"):
        if not isinstance(value[part], str) or not IDENTIFIER.match(value[part]):
            raise ConfigError(file, entry, f"{field}.{part}", f"must be an upper-case identifier, got {value[part]!r}")
    return WorkflowEvent(value["type"], value["code"])


def load_rejection_codes(config_dir: Path) -> RejectionConfig:
    file = config_dir / "rejection_codes.yaml"
    document = read_document(file, "rejection_codes")
    entries = document["rejection_codes"]
    reject_unknown_fields(file, "-", document, {"rejection_codes", "default_payment_type", "bacs_return_codes",
                                                "arudd_mandate_actions"})
    default_type = document.get("default_payment_type", "MANUAL")
    if default_type not in PAYMENT_TYPES:
        raise ConfigError(file, "-", "default_payment_type", f"must be one of {', '.join(PAYMENT_TYPES)}")
    if default_type != "MANUAL":
        raise ConfigError(file, "-", "default_payment_type",
                          "a declined account reverts to MANUAL (card and direct debit need the customer's consent)")
    if not isinstance(entries, list):
        raise ConfigError(file, "-", "rejection_codes", "must be a list of rejection code entries")
    codes: dict[str, RejectionCode] = {}
    fields = {"code", "description", "reason_type", "reason_code", "decline", "retries", "suspension_days",
              "retry_event", "cancellation_event", "refund_event"}
    for index, raw in enumerate(entries):
        entry = f"rejection_codes[{index}]"
        if not isinstance(raw, dict):
            raise ConfigError(file, entry, "-", "must be a mapping")
        if isinstance(raw.get("code"), str):
            entry = raw["code"]
        reject_unknown_fields(file, entry, raw, fields)
        code = raw.get("code")
        if isinstance(code, int) and not isinstance(code, bool):
            raise ConfigError(file, entry, "code", f"must be a quoted string (YAML reads {code!r} as a number; "
                                                   "write code: '05' to keep a leading zero)")
        code = require_field(file, entry, raw, "code", str)
        if not CODE.match(code):
            raise ConfigError(file, entry, "code", "must be 1-8 letters or digits")
        if code in codes:
            raise ConfigError(file, entry, "code", "is defined twice; codes are unique")
        description = require_field(file, entry, raw, "description", str)
        if not description.strip() or len(description) > 60:
            raise ConfigError(file, entry, "description", "must be 1-60 characters")
        for field in ("reason_type", "reason_code"):
            if not IDENTIFIER.match(require_field(file, entry, raw, field, str)):
                raise ConfigError(file, entry, field, f"must be an upper-case identifier, got {raw[field]!r}")
        decline = require_field(file, entry, raw, "decline", str)
        if decline not in ("SOFT", "HARD"):
            raise ConfigError(file, entry, "decline", f"must be SOFT or HARD, got {decline!r}")
        retry_event = read_workflow_event(file, entry, raw, "retry_event")
        cancellation_event = read_workflow_event(file, entry, raw, "cancellation_event")
        refund_event = read_workflow_event(file, entry, raw, "refund_event")
        if decline == "SOFT":
            retries = require_field(file, entry, raw, "retries", int)
            if not 0 <= retries <= 10:
                raise ConfigError(file, entry, "retries", f"must be between 0 and 10, got {retries}")
            suspension_days = require_field(file, entry, raw, "suspension_days", int)
            if not 0 <= suspension_days <= 90:
                raise ConfigError(file, entry, "suspension_days", f"must be between 0 and 90, got {suspension_days}")
            if retry_event is None:
                raise ConfigError(file, entry, "retry_event", "a soft decline needs the workflow event it raises")
            if cancellation_event is None:
                raise ConfigError(file, entry, "cancellation_event",
                                  "a soft decline needs the event raised when its retries run out")
            if refund_event is not None:
                raise ConfigError(file, entry, "refund_event", "only a hard decline raises a refund event")
        else:
            for field in ("retries", "suspension_days", "retry_event", "cancellation_event"):
                if field in raw:
                    raise ConfigError(file, entry, field, "a hard decline is never retried; remove this field")
            if refund_event is None:
                raise ConfigError(file, entry, "refund_event", "a hard decline needs the refund event it raises")
            retries = suspension_days = 0
        codes[code] = RejectionCode(code, description, raw["reason_type"], raw["reason_code"], decline, retries,
                                    suspension_days, retry_event, cancellation_event, refund_event)
    return_codes = _bacs_return_codes(file, document.get("bacs_return_codes", []), codes)
    return RejectionConfig(default_type, codes, return_codes,
                           _mandate_actions(file, document.get("arudd_mandate_actions", {}), codes, return_codes))


MANDATE_ACTIONS = ("KEEP", "CANCEL", "HOLD")


def _mandate_actions(file: Path, raw: object, codes: dict[str, RejectionCode],
                     return_codes: dict[str, str]) -> dict[str, str]:
    """What a return does to its mandate, per ARUDD rejection code; every code a return code maps to has one."""
    if not isinstance(raw, dict):
        raise ConfigError(file, "-", "arudd_mandate_actions", "must be a mapping of rejection code to KEEP, CANCEL "
                                                              "or HOLD")
    for code, action in raw.items():
        if code not in codes:
            raise ConfigError(file, f"arudd_mandate_actions[{code}]", "-", "is not one of the rejection_codes above")
        if action not in MANDATE_ACTIONS:
            raise ConfigError(file, f"arudd_mandate_actions[{code}]", "-",
                              f"must be one of {', '.join(MANDATE_ACTIONS)}, got {action!r}")
    for return_code, code in return_codes.items():
        if code not in raw:
            raise ConfigError(file, f"bacs_return_codes[{return_code}]", "rejection_code",
                              f"{code!r} has no entry in arudd_mandate_actions (KEEP, CANCEL or HOLD)")
    return dict(raw)


def _bacs_return_codes(file: Path, entries: object, codes: dict[str, RejectionCode]) -> dict[str, str]:
    """ARUDD reports carry a four-digit returnCode; each maps to one configured rejection code."""
    if not isinstance(entries, list):
        raise ConfigError(file, "-", "bacs_return_codes", "must be a list of {return_code, rejection_code} entries")
    mapping: dict[str, str] = {}
    for index, raw in enumerate(entries):
        entry = f"bacs_return_codes[{index}]"
        if not isinstance(raw, dict):
            raise ConfigError(file, entry, "-", "must be a mapping")
        if isinstance(raw.get("return_code"), str):
            entry = f"bacs_return_codes[{raw['return_code']}]"
        reject_unknown_fields(file, entry, raw, {"return_code", "rejection_code"})
        value = raw.get("return_code")
        if isinstance(value, int) and not isinstance(value, bool):
            raise ConfigError(file, entry, "return_code", f"must be a quoted string (YAML reads {value!r} as a "
                                                          "number and drops leading zeros)")
        value = require_field(file, entry, raw, "return_code", str)
        if not re.fullmatch(r"[0-9]{4}", value):
            raise ConfigError(file, entry, "return_code", f"must be four digits, got {value!r}")
        if value in mapping:
            raise ConfigError(file, entry, "return_code", "is mapped twice; each return code maps to one code")
        target = require_field(file, entry, raw, "rejection_code", str)
        if target not in codes:
            raise ConfigError(file, entry, "rejection_code", f"{target!r} is not one of the rejection_codes above")
        mapping[value] = target
    return mapping


# ---- Payments module: payment terms, payment term defaults, mandate revision codes --------------------------

TERM_CODE = re.compile(r"^[A-Z0-9]{1,3}$")
SECURITY_LEVEL = re.compile(r"^[A-Z][A-Z0-9_]{0,29}$")


@dataclass(frozen=True)
class PaymentTerm:
    code: str
    description: str
    days_to_pay: int


@dataclass(frozen=True)
class PaymentTermDefault:
    code: str  # a payment term code
    payment_type: str
    security_levels: tuple[str, ...]


@dataclass(frozen=True)
class PaymentTermsConfig:
    terms: dict[str, PaymentTerm]
    defaults: dict[str, PaymentTermDefault]

    def default_for(self, payment_type: str) -> PaymentTerm | None:
        """The payment term a new account paying by `payment_type` gets."""
        for default in self.defaults.values():
            if default.payment_type == payment_type:
                return self.terms[default.code]
        return None


def _entries(file: Path, document: dict, key: str) -> list:
    entries = document.get(key)
    if not isinstance(entries, list):
        raise ConfigError(file, "-", key, f"must be a list of {key.replace('_', ' ')} entries")
    return entries


def _entry_name(raw: object, key: str, index: int) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("code"), str):
        return raw["code"]
    return f"{key}[{index}]"


def _code(file: Path, entry: str, raw: dict, pattern: re.Pattern, rule: str) -> str:
    value = raw.get("code")
    if isinstance(value, int) and not isinstance(value, bool):
        raise ConfigError(file, entry, "code", f"must be a quoted string (YAML reads {value!r} as a number)")
    value = require_field(file, entry, raw, "code", str)
    if not pattern.match(value):
        raise ConfigError(file, entry, "code", rule)
    return value


def load_payment_terms(config_dir: Path) -> PaymentTermsConfig:
    file = config_dir / "payment_terms.yaml"
    document = read_document(file, "payment_terms")
    reject_unknown_fields(file, "-", document, {"payment_terms", "payment_term_defaults"})
    terms: dict[str, PaymentTerm] = {}
    for index, raw in enumerate(_entries(file, document, "payment_terms")):
        entry = _entry_name(raw, "payment_terms", index)
        if not isinstance(raw, dict):
            raise ConfigError(file, entry, "-", "must be a mapping")
        reject_unknown_fields(file, entry, raw, {"code", "description", "days_to_pay"})
        code = _code(file, entry, raw, TERM_CODE, "must be 1-3 upper-case letters or digits")
        if code in terms:
            raise ConfigError(file, entry, "code", "is defined twice; payment term codes are unique")
        description = require_field(file, entry, raw, "description", str)
        if not description.strip() or len(description) > 30:
            raise ConfigError(file, entry, "description", f"must be 1-30 characters, got {len(description)}")
        days = require_field(file, entry, raw, "days_to_pay", int)
        if not 0 <= days <= 365:
            raise ConfigError(file, entry, "days_to_pay", f"must be between 0 and 365, got {days}")
        terms[code] = PaymentTerm(code, description, days)
    defaults: dict[str, PaymentTermDefault] = {}
    for index, raw in enumerate(_entries(file, document, "payment_term_defaults")):
        entry = _entry_name(raw, "payment_term_defaults", index)
        if not isinstance(raw, dict):
            raise ConfigError(file, entry, "-", "must be a mapping")
        reject_unknown_fields(file, entry, raw, {"code", "payment_type", "security_levels"})
        code = _code(file, entry, raw, TERM_CODE, "must be 1-3 upper-case letters or digits")
        if code not in terms:
            raise ConfigError(file, entry, "code", f"is not a payment term; known: {', '.join(sorted(terms))}")
        payment_type = require_field(file, entry, raw, "payment_type", str)
        if payment_type not in PAYMENT_TYPES:
            raise ConfigError(file, entry, "payment_type", f"must be one of {', '.join(PAYMENT_TYPES)}")
        if any(d.payment_type == payment_type for d in defaults.values()):
            raise ConfigError(file, entry, "payment_type", f"{payment_type} already has a default payment term")
        levels = require_field(file, entry, raw, "security_levels", list)
        if not levels:
            raise ConfigError(file, entry, "security_levels", "at least one security level must have access")
        for level in levels:
            if not isinstance(level, str) or not SECURITY_LEVEL.match(level):
                raise ConfigError(file, entry, "security_levels", f"{level!r} is not a security level name")
        defaults[f"{code}/{payment_type}"] = PaymentTermDefault(code, payment_type, tuple(levels))
    return PaymentTermsConfig(terms, defaults)


@dataclass(frozen=True)
class MandateRevisionCode:
    """An ADDACS reason (Payments module): what a bank's advice does to a direct-debit mandate."""

    code: str
    name: str
    action: str  # AMEND or CANCEL
    reason_type: str
    reason_code: str
    event: WorkflowEvent


def load_mandate_revision_codes(config_dir: Path) -> dict[str, MandateRevisionCode]:
    file = config_dir / "mandate_revision_codes.yaml"
    entries = _load(file, "mandate_revision_codes")
    if not isinstance(entries, list):
        raise ConfigError(file, "-", "mandate_revision_codes", "must be a list of mandate revision code entries")
    codes: dict[str, MandateRevisionCode] = {}
    for index, raw in enumerate(entries):
        entry = _entry_name(raw, "mandate_revision_codes", index)
        if not isinstance(raw, dict):
            raise ConfigError(file, entry, "-", "must be a mapping")
        reject_unknown_fields(file, entry, raw, {"code", "name", "action", "reason_type", "reason_code", "event"})
        code = _code(file, entry, raw, CODE, "must be 1-8 letters or digits")
        if code in codes:
            raise ConfigError(file, entry, "code", "is defined twice; codes are unique")
        name = require_field(file, entry, raw, "name", str)
        if not name.strip() or len(name) > 60:
            raise ConfigError(file, entry, "name", "must be 1-60 characters")
        action = require_field(file, entry, raw, "action", str)
        if action not in ("AMEND", "CANCEL"):
            raise ConfigError(file, entry, "action", f"must be AMEND or CANCEL, got {action!r}")
        for field in ("reason_type", "reason_code"):
            if not IDENTIFIER.match(require_field(file, entry, raw, field, str)):
                raise ConfigError(file, entry, field, f"must be an upper-case identifier, got {raw[field]!r}")
        event = read_workflow_event(file, entry, raw, "event")
        if event is None:
            raise ConfigError(file, entry, "event", "the workflow event that handles the revision is required")
        codes[code] = MandateRevisionCode(code, name, action, raw["reason_type"], raw["reason_code"], event)
    return codes


@dataclass(frozen=True)
class DirectDebitConfig:
    """The service user that collects by Bacs direct debit, and the timings of its instructions."""

    service_user_number: str
    service_user_name: str
    originating_sort_code: str
    originating_account: str
    bureau: str  # the partner that carries AUDDIS/collection files to Bacs and brings ADDACS/ARUDD back
    activation_days: int  # no rejection within this many days of submission: the mandate is active
    advance_notice_days: int


def load_direct_debit(config_dir: Path, partners: dict[str, Partner] | None = None) -> DirectDebitConfig:
    file = config_dir / "direct_debit.yaml"
    raw = _load(file, "direct_debit")
    entry = "direct_debit"
    if not isinstance(raw, dict):
        raise ConfigError(file, entry, "-", "must be a mapping")
    fields = {"service_user_number": (6, "digits"), "originating_sort_code": (6, "digits"),
              "originating_account": (8, "digits")}
    reject_unknown_fields(file, entry, raw,
                          {*fields, "service_user_name", "bureau", "activation_days", "advance_notice_days"})
    for field, (width, _) in fields.items():
        value = raw.get(field)
        if not isinstance(value, str) or len(value) != width or not value.isdigit():
            raise ConfigError(file, entry, field, f"must be {width} digits in quotes, got {value!r}")
    name = require_field(file, entry, raw, "service_user_name", str)
    if not re.fullmatch(r"[A-Z0-9 ./&-]{1,18}", name):
        raise ConfigError(file, entry, "service_user_name", "must be 1-18 characters of A-Z 0-9 space . / & -")
    bureau = require_field(file, entry, raw, "bureau", str)
    if partners is not None and (bureau not in partners or "addacs" not in partners[bureau].feeds):
        raise ConfigError(file, entry, "bureau", f"{bureau!r} is not a partner with feed 'addacs' in partners.yaml")
    days = {}
    for field, limit in (("activation_days", 30), ("advance_notice_days", 30)):
        days[field] = require_field(file, entry, raw, field, int)
        if not 0 <= days[field] <= limit:
            raise ConfigError(file, entry, field, f"must be between 0 and {limit}, got {days[field]}")
    return DirectDebitConfig(raw["service_user_number"], name, raw["originating_sort_code"],
                             raw["originating_account"], bureau, days["activation_days"], days["advance_notice_days"])
