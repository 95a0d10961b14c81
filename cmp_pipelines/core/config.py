"""Business configuration: one typed model per file in `config/`, validated on load.

Every file has a pydantic model (`<Name>File`, its list items `<Name>Entry`, its single nested mappings
`<Name>Section`), strict and with `extra="forbid"`, so a misspelt key or a number where a string belongs is an error
rather than a silent default. Rules that span entries or files (duplicates, references) run once the model holds.
Every error names the file, the path of the field inside it and why (`.../partners.yaml: partners[2].feeds[0]:
unknown feed 'cash'; ...`). Loaders return the frozen dataclasses the flows use, and raise the first error;
`check_config_dir` lists every error of every registered file, for `init` and `config validate`.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, NoReturn, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from cmp_pipelines.core.probes import PROBES_BY_ID

FEEDS = ("nrp", "card_rejections", "addacs", "arudd", "warehouse_dispatch", "device_enrolment", "delivery_receipts",
         "billing")
PAYMENT_TYPES = ("MANUAL", "RECURRING_CARD", "DIRECT_DEBIT")
CODE = re.compile(r"^[A-Za-z0-9]{1,8}$")
IDENTIFIER = re.compile(r"^[A-Z][A-Z0-9_]{0,39}$")
PARTNER_ID = re.compile(r"^[A-Z][A-Z0-9_]{1,31}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ConfigError(ValueError):
    """One mistake in one file. `entry` (the entry's id, e.g. a partner id) and `field` (inside the entry) are
    what the loaders have always reported; `path` is the field's place in the file (`partners[2].feeds`)."""

    def __init__(self, file: Path, entry: str, field: str, why: str, path: str | None = None):
        if path is None:
            path = ".".join(part for part in (entry, field) if part != "-")
        super().__init__(f"{file}: {path}: {why}" if path else f"{file}: {why}")
        self.file, self.entry, self.field, self.why, self.path = file, entry, field, why, path


DEFAULT_SETTLE_SECONDS = 5  # a file unchanged this long is complete, for a partner that does not rename uploads
DEFAULT_UPLOAD_SUFFIXES = (".part", ".tmp")
DEFAULT_DUPLICATE_WINDOW_DAYS = 30
UPLOAD_SUFFIX = re.compile(r"^\.[A-Za-z0-9_~-]{1,15}$")


# ---- the machinery every file model shares -------------------------------------------------------------------


class FileModel(BaseModel):
    """Strict: YAML's `5` is not the string "5", `'5'` is not an integer, and an unknown key is an error."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def fail(why: str, field: str | None = None) -> NoReturn:
    """A validation error with our own wording; `field` places a rule of a whole entry on one of its fields."""
    raise PydanticCustomError("config", "{why}", {"why": why, **({"field": field} if field else {})})


def between(low: int, high: int) -> AfterValidator:
    return AfterValidator(lambda v: v if low <= v <= high else fail(f"must be between {low} and {high}, got {v}"))


def matches(pattern: re.Pattern | str, why: str | Callable[[str], str]) -> AfterValidator:
    """A string matching `pattern`; `why` is the message (or makes it from the value)."""
    compiled = re.compile(pattern) if isinstance(pattern, str) else pattern

    def check(value: str) -> str:
        if compiled.fullmatch(value) is None:
            fail(why(value) if callable(why) else why)
        return value

    return AfterValidator(check)


def text(low: int, high: int, *, show_length: bool = False) -> AfterValidator:
    def check(value: str) -> str:
        if not value.strip() or len(value) > high:
            fail(f"must be {low}-{high} characters" + (f", got {len(value)}" if show_length else ""))
        return value

    return AfterValidator(check)


def non_empty(why: str) -> AfterValidator:
    return AfterValidator(lambda v: v if v else fail(why))


def quoted(hint: str = "") -> BeforeValidator:
    """YAML reads `05` as the number 5: a code must be quoted, and the message says so."""

    def check(value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            fail(f"must be a quoted string (YAML reads {value!r} as a number{hint})")
        return value

    return BeforeValidator(check)


def _choice_message(choices: tuple[str, ...], value: object) -> str:
    listed = " or ".join(choices) if len(choices) == 2 else f"one of {', '.join(choices)}"
    return f"must be {listed}, got {value!r}"


def one_of(*choices: str, why: Callable[[object], str] | None = None) -> Any:
    """A string among `choices`, typed as the Literal of them."""

    def check(value: object) -> object:
        if value not in choices:
            fail(why(value) if why else _choice_message(choices, value))
        return value

    return Annotated[Literal[choices], BeforeValidator(check)]


Identifier = Annotated[str, matches(IDENTIFIER, lambda v: f"must be an upper-case identifier, got {v!r}")]
Email = Annotated[str, matches(EMAIL, lambda v: f"{v!r} is not an e-mail address")]
PaymentType = one_of(*PAYMENT_TYPES)


def _exactly_type_and_code(value: object) -> object:
    if not isinstance(value, dict) or set(value) != {"type", "code"}:
        fail("must be a mapping with exactly 'type' and 'code'")
    return value


class WorkflowEventEntry(FileModel):
    """`{type, code}`: the workflow event an outcome raises."""

    type: Identifier
    code: Identifier

    _exact = model_validator(mode="before")(_exactly_type_and_code)

    def event(self) -> WorkflowEvent:
        return WorkflowEvent(self.type, self.code)


def required_event(why: str) -> Any:
    """A workflow event that must be there: `null` says why it is needed rather than 'must be a mapping'."""
    return Annotated[WorkflowEventEntry, BeforeValidator(lambda v: fail(why) if v is None else v)]


@dataclass(frozen=True)
class Entries:
    """A list of entries, each named in errors by its `id_field` (`label` formats it), else by its index."""

    id_field: str
    label: str = "{id}"


@dataclass(frozen=True)
class Keyed:
    """A mapping of id to entry, each named in errors by its id."""

    label: str = "{id}"


SECTION = "section"  # a single mapping, named in errors by its key


def _path(loc: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))


def locate(document: object, sections: dict[str, Entries | Keyed | str], loc: tuple) -> tuple[str, str, str]:
    """(entry, field, path) of the place `loc` in a file: entry as the loaders name it, field inside the entry."""
    if not loc:
        return "-", "-", ""
    top, kind = loc[0], sections.get(str(loc[0]))

    def names(parts: Iterable) -> str:
        return ".".join(p for p in parts if isinstance(p, str)) or "-"

    if kind is None:
        return "-", names(loc), _path(loc)
    if kind == SECTION:
        return str(top), names(loc[1:]), _path(loc)
    if len(loc) == 1:
        return "-", str(top), _path(loc)
    if isinstance(kind, Keyed):
        return kind.label.format(id=loc[1]), names(loc[2:]), _path(loc)
    items = document.get(top) if isinstance(document, dict) else None
    index = loc[1]
    item = items[index] if isinstance(items, list) and isinstance(index, int) and index < len(items) else None
    ident = item.get(kind.id_field) if isinstance(item, dict) else None
    entry = kind.label.format(id=ident) if isinstance(ident, str) else f"{top}[{index}]"
    return entry, names(loc[2:]), _path(loc)


def _strip(annotation: Any) -> Any:
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            annotation = next(a for a in get_args(annotation) if a is not type(None))
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The fields of the model found at `loc` inside `model`: what an unknown key could have been."""
    node: Any = model
    for part in loc:
        node = _strip(node)
        if _is_model(node):
            if part not in node.model_fields:
                return []
            node = node.model_fields[part].annotation
        elif get_origin(node) in (list, tuple, dict):
            node = get_args(node)[1] if get_origin(node) is dict else get_args(node)[0]
        else:
            return []
    node = _strip(node)
    return sorted(node.model_fields) if _is_model(node) else []


def _why(error: dict, model: type[BaseModel]) -> str:
    kind, value = error["type"], error.get("input")
    if kind == "config":
        return error["ctx"]["why"]
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return f"unknown field; allowed: {', '.join(fields_at(model, error['loc'][:-1]))}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be an integer, got {value!r}"
    if kind == "string_type":
        return f"must be a string, got {value!r}"
    if kind in ("list_type", "tuple_type"):
        return f"must be a list, got {value!r}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping, got {value!r}"
    if kind == "bool_type":
        return f"must be true or false, got {value!r}"
    return str(error["msg"])


M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class Problems:
    """Mistakes found by the rules that span entries or files, each at its place in the file."""

    def __init__(self) -> None:
        self.found: list[tuple[tuple, str]] = []

    def add(self, loc: tuple, why: str) -> None:
        self.found.append((loc, why))


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML keeps the last of two equal keys without a word; here the second one is an error, as a misspelt key is."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int):
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice in one mapping",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(file: Path) -> dict:
    """The file's top-level mapping; a missing file, bad YAML or another shape is a ConfigError."""
    if not file.exists():
        raise ConfigError(file, "-", "-", "file not found")
    try:
        document = yaml.load(file.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = "; ".join(part for part in (exc.context, exc.problem) if part)
        raise ConfigError(file, "-", "-", f"not valid YAML{where}: {what}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(file, "-", "-", f"not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigError(file, "-", "-", "the file must be a mapping of settings, as the shipped file is")
    return document


_LOADED: dict[tuple, object] = {}


def _copy(value):
    """The cached value's container copied (its items are frozen), so a caller's change stays its own."""
    return dict(value) if isinstance(value, dict) else list(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class ConfigFile(Generic[M, T]):
    """One file of `config/`: its model, how errors name its entries, and `build`, which turns the validated
    model into what the flows use and reports the rules that span entries (and `partners.yaml`, when given)."""

    name: str
    model: type[M]
    build: Callable[[M, Problems, dict | None], T]
    sections: dict[str, Entries | Keyed | str] = dataclass_field(default_factory=dict)

    def run(self, config_dir: Path, partners: dict | None = None) -> tuple[T | None, list[ConfigError]]:
        file = config_dir / self.name
        try:
            document = read_yaml(file)
        except ConfigError as exc:
            return None, [exc]
        try:
            parsed = self.model.model_validate(document)
        except ValidationError as exc:
            return None, [self._error(file, document, _at(e), _why(e, self.model)) for e in exc.errors()]
        problems = Problems()
        value = self.build(parsed, problems, partners)
        if problems.found:
            return None, [self._error(file, document, loc, why) for loc, why in problems.found]
        return value, []

    def _error(self, file: Path, document: dict, loc: tuple, why: str) -> ConfigError:
        entry, field, path = locate(document, self.sections, loc)
        return ConfigError(file, entry, field, why, path)

    def load(self, config_dir: Path, partners: dict | None = None) -> T:
        """Validated once per content of the file in a process: a run's steps and a sensor's ticks read the same
        file many times (~50 ms of YAML and validation each, issue 16). Keyed by the bytes, not the file time (two
        writes within a clock tick keep it); a caller gets its own copy of a mapping or list to change."""
        key = None
        if partners is None:
            try:
                key = (self.name, str(config_dir), (config_dir / self.name).read_bytes())
            except OSError:
                key = None
            if key is not None and key in _LOADED:
                return _copy(_LOADED[key])
        value, errors = self.run(config_dir, partners)
        if errors:
            raise errors[0]
        if key is not None:
            _LOADED[key] = value
        return _copy(value)  # type: ignore[return-value]

    def check(self, config_dir: Path, partners: dict | None = None) -> list[ConfigError]:
        return self.run(config_dir, partners)[1]


def _at(error: dict) -> tuple:
    """The error's place; a rule of a whole entry names the field it is about."""
    extra = (error["ctx"]["field"],) if error["type"] == "config" and "field" in error.get("ctx", {}) else ()
    return tuple(error["loc"]) + extra


CONFIG_FILES: dict[str, ConfigFile] = {}


def register(config_file: ConfigFile) -> ConfigFile:
    """Put a file on the list `init` and `config validate` check; flows register their own files."""
    CONFIG_FILES[config_file.name] = config_file
    return config_file


def check_config_dir(config_dir: Path, files: Iterable[ConfigFile] | None = None) -> list[ConfigError]:
    """Every error of every registered file (partners.yaml first: the others refer to it), and every YAML file
    that no model reads (a misnamed file would otherwise be ignored while its defaults apply)."""
    import cmp_pipelines.core.config_payments  # noqa: F401  (registers api_clients.yaml, payment_provider.yaml)
    import cmp_pipelines.core.config_workflow  # noqa: F401  (registers workflow_actions.yaml, alerts.yaml)
    import cmp_pipelines.core.security  # noqa: F401  (registers security.yaml, operators.yaml)

    known = {f.name: f for f in (files if files is not None else CONFIG_FILES.values())}
    partners, errors = PARTNERS_FILE.run(config_dir)
    for name in sorted(set(known) - {PARTNERS_FILE.name}):
        errors += known[name].check(config_dir, partners)
    if files is None:
        errors += cmp_pipelines.core.security.unknown_payment_term_levels(config_dir)
    for file in sorted(config_dir.glob("*.y*ml")):
        if file.name not in known:
            errors.append(ConfigError(file, "-", "-", "no configuration model reads this file; known files: "
                                                      f"{', '.join(sorted(known))}"))
    return errors


# ---- partners.yaml -------------------------------------------------------------------------------------------


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
    # How outbound documents reach the partner and, for SFTP, where its inbound files are picked up (issue 17).
    transport: LocalTransport | SftpTransport | None = None

    def delivery_transport(self) -> LocalTransport | SftpTransport:
        """The configured transport; a partner without one gets a local folder, `delivered/<partner>`."""
        return self.transport or LocalTransport(type="local", folder=f"delivered/{self.partner_id}")


Feed = Annotated[str, AfterValidator(
    lambda v: v if v in FEEDS else fail(f"unknown feed {v!r}; known feeds: {', '.join(FEEDS)}"))]
UploadSuffix = Annotated[str, matches(UPLOAD_SUFFIX, lambda v: f"{v!r} must be a dot and 1-15 of A-Z a-z 0-9 _ ~ -, "
                                                               "e.g. .part")]


HOST_KEY = re.compile(r"^(?:\S+ )?(?:ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)|ssh-ed448) "
                      r"[A-Za-z0-9+/]+={0,3}(?: .*)?$")
SAFE_RELATIVE = re.compile(r"^(?!/)(?!.*(?:^|/)\.\.(?:/|$))[A-Za-z0-9_./~-]+$")


def _a_path_not_a_key(value: str) -> str:
    if "PRIVATE KEY" in value or "\n" in value:
        fail("must be the path of the key file, never the key itself (keys stay out of config and logs)")
    return value


class LocalTransport(FileModel):
    """A folder (relative to the data dir, or absolute): `make run`'s default, and a mounted share in production."""

    type: Literal["local"]
    folder: Annotated[str, text(1, 400)]


class SftpPickup(FileModel):
    """A remote folder the partner drops files into for one of its inbound feeds."""

    feed: Feed
    remote_folder: Annotated[str, text(1, 400)]
    # delete: remove the remote file once it is safely in our inbound folder; move: rename it into
    # processed_folder (relative to remote_folder) for partners that keep their own copy
    after_download: one_of("delete", "move") = "delete"
    processed_folder: Annotated[str, matches(SAFE_RELATIVE, "must be a relative folder name, e.g. processed")] = \
        "processed"


class SftpTransport(FileModel):
    """SFTP with a pinned host key: `host_key` (an OpenSSH public key or known_hosts line) or `known_hosts_file`;
    an unknown or changed key is refused, never accepted. `key_file` is a path (relative to $CMP_KEYS_DIR)."""

    type: Literal["sftp"]
    host: Annotated[str, text(1, 253)]
    port: Annotated[int, between(1, 65535)] = 22
    user: Annotated[str, text(1, 64)]
    key_file: Annotated[str, text(1, 400), AfterValidator(_a_path_not_a_key)]
    host_key: Annotated[str, matches(HOST_KEY, "must be an OpenSSH public key ('ssh-ed25519 AAAA...') or a "
                                               "known_hosts line")] | None = None
    known_hosts_file: Annotated[str, text(1, 400)] | None = None
    remote_folder: Annotated[str, text(1, 400)] = "."
    connect_timeout_seconds: Annotated[int, between(1, 300)] = 20
    pickup: list[SftpPickup] = []

    @model_validator(mode="after")
    def _pinned(self) -> SftpTransport:
        if (self.host_key is None) == (self.known_hosts_file is None):
            fail("give exactly one of host_key or known_hosts_file: the server's key is pinned, never accepted "
                 "on first sight", "host_key")
        return self


def _transport_type(value: object) -> object:
    if isinstance(value, dict) and value.get("type") not in ("local", "sftp"):
        fail(f"type must be local or sftp, got {value.get('type')!r}")
    return value


Transport = Annotated[Union[LocalTransport, SftpTransport],  # noqa: UP007 (pydantic's discriminated union)
                      Field(discriminator="type"), BeforeValidator(_transport_type)]


class PartnerEntry(FileModel):
    partner_id: Annotated[str, matches(PARTNER_ID, "must be 2-32 of A-Z, 0-9, _ starting with a letter")]
    name: str = ""
    feeds: list[Feed]
    upload_completion: one_of("settle", "rename") = "settle"
    settle_seconds: Annotated[int, between(0, 3600)] = DEFAULT_SETTLE_SECONDS
    upload_suffixes: Annotated[list[UploadSuffix], non_empty("must name at least one suffix, e.g. [.part]")] = \
        list(DEFAULT_UPLOAD_SUFFIXES)
    duplicate_window_days: Annotated[int, between(0, 400)] = DEFAULT_DUPLICATE_WINDOW_DAYS
    transport: Transport | None = None

    @model_validator(mode="after")
    def _one_completion_convention(self) -> PartnerEntry:
        if isinstance(self.transport, SftpTransport):
            for pickup in self.transport.pickup:
                if pickup.feed not in self.feeds:
                    fail(f"picks up feed {pickup.feed!r}, which is not one of the partner's feeds", "transport")
        if self.upload_completion == "settle" and "upload_suffixes" in self.model_fields_set:
            fail("only a partner with upload_completion rename has upload suffixes", "upload_suffixes")
        if self.upload_completion == "rename" and "settle_seconds" in self.model_fields_set:
            fail("a partner that renames finished uploads does not wait for them to settle; remove this field",
                 "settle_seconds")
        return self


class PartnersFile(FileModel):
    partners: list[PartnerEntry]


def _build_partners(parsed: PartnersFile, problems: Problems, _: object) -> dict[str, Partner]:
    partners: dict[str, Partner] = {}
    for index, p in enumerate(parsed.partners):
        if p.partner_id in partners:
            problems.add(("partners", index, "partner_id"), "is defined twice")
        partners[p.partner_id] = Partner(p.partner_id, p.name or p.partner_id, tuple(p.feeds), p.upload_completion,
                                         p.settle_seconds, tuple(p.upload_suffixes), p.duplicate_window_days,
                                         p.transport)
    return partners


PARTNERS_FILE = register(ConfigFile("partners.yaml", PartnersFile, _build_partners,
                                    {"partners": Entries("partner_id")}))


def load_partners(config_dir: Path) -> dict[str, Partner]:
    return PARTNERS_FILE.load(config_dir)


# ---- probes.yaml ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeConfig:
    probe_id: str
    threshold: int
    window_hours: int
    recipients: tuple[str, ...]
    older_than_minutes: int | None = None  # for the probes counting what has waited too long


class ProbeEntry(FileModel):
    threshold: Annotated[int, AfterValidator(lambda v: v if v >= 0 else fail(f"must be zero or more, got {v}"))]
    window_hours: Annotated[int, between(1, 24 * 31)]
    recipients: list[Email] = []
    older_than_minutes: Annotated[int, between(1, 60 * 24 * 14)] | None = None


class ProbesFile(FileModel):
    probes: dict[str, ProbeEntry]


def _build_probes(parsed: ProbesFile, problems: Problems, _: object) -> dict[str, ProbeConfig]:
    for probe_id in parsed.probes:
        if probe_id not in PROBES_BY_ID:
            problems.add(("probes", probe_id), f"unknown probe; known probes: {', '.join(sorted(PROBES_BY_ID))}")
    for probe_id, entry in parsed.probes.items():
        kind = PROBES_BY_ID[probe_id].kind if probe_id in PROBES_BY_ID else None
        if kind == "alert" and not entry.recipients:
            problems.add(("probes", probe_id, "recipients"), "an alert probe needs at least one recipient")
        if kind == "sla" and entry.recipients:
            problems.add(("probes", probe_id, "recipients"), "an SLA probe never notifies; remove its recipients")
        needs_age = PROBES_BY_ID[probe_id].needs_age if probe_id in PROBES_BY_ID else False
        if needs_age and entry.older_than_minutes is None:
            problems.add(("probes", probe_id, "older_than_minutes"), "is required: the probe counts what is older")
        if not needs_age and entry.older_than_minutes is not None:
            problems.add(("probes", probe_id, "older_than_minutes"), "this probe has no age; remove the field")
    for probe_id in sorted(set(PROBES_BY_ID) - set(parsed.probes)):
        problems.add(("probes", probe_id), "probe is not configured (every probe needs a threshold)")
    return {probe_id: ProbeConfig(probe_id, e.threshold, e.window_hours, tuple(e.recipients), e.older_than_minutes)
            for probe_id, e in parsed.probes.items()}


PROBES_FILE = register(ConfigFile("probes.yaml", ProbesFile, _build_probes, {"probes": Keyed()}))


def load_probes(config_dir: Path) -> dict[str, ProbeConfig]:
    return PROBES_FILE.load(config_dir)


# ---- rejection_codes.yaml ------------------------------------------------------------------------------------


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
    default_payment_type: str  # what a hard decline reverts an account to, where it can (core/rejections.py)
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


MANDATE_ACTIONS = ("KEEP", "CANCEL", "HOLD")


class RejectionCodeEntry(FileModel):
    code: Annotated[str, quoted("; write code: '05' to keep a leading zero"), matches(CODE, "must be 1-8 letters or "
                                                                                            "digits")]
    description: Annotated[str, text(1, 60)]
    reason_type: Identifier
    reason_code: Identifier
    decline: one_of("SOFT", "HARD")
    retries: Annotated[int, between(0, 10)] | None = None
    suspension_days: Annotated[int, between(0, 90)] | None = None
    retry_event: WorkflowEventEntry | None = None
    cancellation_event: WorkflowEventEntry | None = None
    refund_event: WorkflowEventEntry | None = None

    @model_validator(mode="after")
    def _soft_or_hard(self) -> RejectionCodeEntry:
        if self.decline == "SOFT":
            for field in ("retries", "suspension_days"):
                if getattr(self, field) is None:
                    fail("is required", field)
            if self.retry_event is None:
                fail("a soft decline needs the workflow event it raises", "retry_event")
            if self.cancellation_event is None:
                fail("a soft decline needs the event raised when its retries run out", "cancellation_event")
            if self.refund_event is not None:
                fail("only a hard decline raises a refund event", "refund_event")
        else:
            for field in ("retries", "suspension_days", "retry_event", "cancellation_event"):
                if field in self.model_fields_set:
                    fail("a hard decline is never retried; remove this field", field)
            if self.refund_event is None:
                fail("a hard decline needs the refund event it raises", "refund_event")
        return self


class BacsReturnCodeEntry(FileModel):
    return_code: Annotated[str, quoted(" and drops leading zeros"),
                           matches(r"[0-9]{4}", lambda v: f"must be four digits, got {v!r}")]
    rejection_code: str


class RejectionCodesFile(FileModel):
    # any payment type; where the account cannot pay that way the engine falls back to MANUAL (core/rejections.py)
    default_payment_type: PaymentType = "MANUAL"
    rejection_codes: list[RejectionCodeEntry]
    bacs_return_codes: list[BacsReturnCodeEntry] = []
    arudd_mandate_actions: dict[str, one_of(*MANDATE_ACTIONS)] = {}


def _event(entry: WorkflowEventEntry | None) -> WorkflowEvent | None:
    return entry.event() if entry else None


def _build_rejection_codes(parsed: RejectionCodesFile, problems: Problems, _: object) -> RejectionConfig:
    codes: dict[str, RejectionCode] = {}
    for index, c in enumerate(parsed.rejection_codes):
        if c.code in codes:
            problems.add(("rejection_codes", index, "code"), "is defined twice; codes are unique")
        codes[c.code] = RejectionCode(c.code, c.description, c.reason_type, c.reason_code, c.decline, c.retries or 0,
                                      c.suspension_days or 0, _event(c.retry_event), _event(c.cancellation_event),
                                      _event(c.refund_event))
    return_codes: dict[str, str] = {}
    for index, r in enumerate(parsed.bacs_return_codes):
        if r.return_code in return_codes:
            problems.add(("bacs_return_codes", index, "return_code"),
                         "is mapped twice; each return code maps to one code")
        if r.rejection_code not in codes:
            problems.add(("bacs_return_codes", index, "rejection_code"),
                         f"{r.rejection_code!r} is not one of the rejection_codes above")
        elif r.rejection_code not in parsed.arudd_mandate_actions:
            problems.add(("bacs_return_codes", index, "rejection_code"),
                         f"{r.rejection_code!r} has no entry in arudd_mandate_actions (KEEP, CANCEL or HOLD)")
        return_codes.setdefault(r.return_code, r.rejection_code)
    for code in parsed.arudd_mandate_actions:
        if code not in codes:
            problems.add(("arudd_mandate_actions", code), "is not one of the rejection_codes above")
    return RejectionConfig(parsed.default_payment_type, codes, return_codes, dict(parsed.arudd_mandate_actions))


REJECTION_CODES_FILE = register(ConfigFile(
    "rejection_codes.yaml", RejectionCodesFile, _build_rejection_codes,
    {"rejection_codes": Entries("code"), "bacs_return_codes": Entries("return_code", "bacs_return_codes[{id}]"),
     "arudd_mandate_actions": Keyed("arudd_mandate_actions[{id}]")}))


def load_rejection_codes(config_dir: Path) -> RejectionConfig:
    return REJECTION_CODES_FILE.load(config_dir)


# ---- payment_terms.yaml (Payments module: payment terms and their defaults) ------------------------------------

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


TermCode = Annotated[str, quoted(), matches(TERM_CODE, "must be 1-3 upper-case letters or digits")]
SecurityLevel = Annotated[str, matches(SECURITY_LEVEL, lambda v: f"{v!r} is not a security level name")]


class PaymentTermEntry(FileModel):
    code: TermCode
    description: Annotated[str, text(1, 30, show_length=True)]
    days_to_pay: Annotated[int, between(0, 365)]


class PaymentTermDefaultEntry(FileModel):
    code: TermCode
    payment_type: PaymentType
    security_levels: Annotated[list[SecurityLevel], non_empty("at least one security level must have access")]


class PaymentTermsFile(FileModel):
    payment_terms: list[PaymentTermEntry]
    payment_term_defaults: list[PaymentTermDefaultEntry]


def _build_payment_terms(parsed: PaymentTermsFile, problems: Problems, _: object) -> PaymentTermsConfig:
    terms: dict[str, PaymentTerm] = {}
    for index, t in enumerate(parsed.payment_terms):
        if t.code in terms:
            problems.add(("payment_terms", index, "code"), "is defined twice; payment term codes are unique")
        terms[t.code] = PaymentTerm(t.code, t.description, t.days_to_pay)
    defaults: dict[str, PaymentTermDefault] = {}
    for index, d in enumerate(parsed.payment_term_defaults):
        if d.code not in terms:
            problems.add(("payment_term_defaults", index, "code"),
                         f"is not a payment term; known: {', '.join(sorted(terms))}")
        if any(other.payment_type == d.payment_type for other in defaults.values()):
            problems.add(("payment_term_defaults", index, "payment_type"),
                         f"{d.payment_type} already has a default payment term")
        defaults[f"{d.code}/{d.payment_type}"] = PaymentTermDefault(d.code, d.payment_type, tuple(d.security_levels))
    return PaymentTermsConfig(terms, defaults)


PAYMENT_TERMS_FILE = register(ConfigFile(
    "payment_terms.yaml", PaymentTermsFile, _build_payment_terms,
    {"payment_terms": Entries("code"), "payment_term_defaults": Entries("code")}))


def load_payment_terms(config_dir: Path) -> PaymentTermsConfig:
    return PAYMENT_TERMS_FILE.load(config_dir)


# ---- mandate_revision_codes.yaml -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MandateRevisionCode:
    """An ADDACS reason (Payments module): what a bank's advice does to a direct-debit mandate."""

    code: str
    name: str
    action: str  # AMEND or CANCEL
    reason_type: str
    reason_code: str
    event: WorkflowEvent


class MandateRevisionCodeEntry(FileModel):
    code: Annotated[str, quoted(), matches(CODE, "must be 1-8 letters or digits")]
    name: Annotated[str, text(1, 60)]
    action: one_of("AMEND", "CANCEL")
    reason_type: Identifier
    reason_code: Identifier
    event: required_event("the workflow event that handles the revision is required")


class MandateRevisionCodesFile(FileModel):
    mandate_revision_codes: list[MandateRevisionCodeEntry]


def _build_mandate_revision_codes(parsed: MandateRevisionCodesFile, problems: Problems,
                                  _: object) -> dict[str, MandateRevisionCode]:
    codes: dict[str, MandateRevisionCode] = {}
    for index, c in enumerate(parsed.mandate_revision_codes):
        if c.code in codes:
            problems.add(("mandate_revision_codes", index, "code"), "is defined twice; codes are unique")
        codes[c.code] = MandateRevisionCode(c.code, c.name, c.action, c.reason_type, c.reason_code, c.event.event())
    return codes


MANDATE_REVISION_CODES_FILE = register(ConfigFile(
    "mandate_revision_codes.yaml", MandateRevisionCodesFile, _build_mandate_revision_codes,
    {"mandate_revision_codes": Entries("code")}))


def load_mandate_revision_codes(config_dir: Path) -> dict[str, MandateRevisionCode]:
    return MANDATE_REVISION_CODES_FILE.load(config_dir)


# ---- direct_debit.yaml ---------------------------------------------------------------------------------------


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


def digits(width: int) -> Any:
    """Bank numbers keep their leading zeros only as quoted strings."""

    def check(value: object) -> object:
        if not isinstance(value, str) or re.fullmatch(f"[0-9]{{{width}}}", value) is None:
            fail(f"must be {width} digits in quotes, got {value!r}")
        return value

    return Annotated[str, BeforeValidator(check)]


class DirectDebitSection(FileModel):
    service_user_number: digits(6)
    service_user_name: Annotated[str, matches(r"[A-Z0-9 ./&-]{1,18}", "must be 1-18 characters of A-Z 0-9 space "
                                                                      ". / & -")]
    originating_sort_code: digits(6)
    originating_account: digits(8)
    bureau: str
    activation_days: Annotated[int, between(0, 30)]
    advance_notice_days: Annotated[int, between(0, 30)]


class DirectDebitFile(FileModel):
    direct_debit: DirectDebitSection


def _build_direct_debit(parsed: DirectDebitFile, problems: Problems,
                        partners: dict[str, Partner] | None) -> DirectDebitConfig:
    d = parsed.direct_debit
    if partners is not None and (d.bureau not in partners or "addacs" not in partners[d.bureau].feeds):
        problems.add(("direct_debit", "bureau"), f"{d.bureau!r} is not a partner with feed 'addacs' in partners.yaml")
    return DirectDebitConfig(d.service_user_number, d.service_user_name, d.originating_sort_code,
                             d.originating_account, d.bureau, d.activation_days, d.advance_notice_days)


DIRECT_DEBIT_FILE = register(ConfigFile("direct_debit.yaml", DirectDebitFile, _build_direct_debit,
                                        {"direct_debit": SECTION}))


def load_direct_debit(config_dir: Path, partners: dict[str, Partner] | None = None) -> DirectDebitConfig:
    """`partners` (from partners.yaml), when given, must hold the bureau with its ADDACS feed."""
    return DIRECT_DEBIT_FILE.load(config_dir, partners)


# ---- card_payments.yaml --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CardPaymentsConfig:
    """Recurring card payments: the customer is told the amount and date this many calendar days before the card
    is charged (the seed's condition for recurring card payments)."""

    advance_notice_days: int


class CardPaymentsSection(FileModel):
    advance_notice_days: Annotated[int, between(0, 30)]


class CardPaymentsFile(FileModel):
    card_payments: CardPaymentsSection


CARD_PAYMENTS_FILE = register(ConfigFile(
    "card_payments.yaml", CardPaymentsFile,
    lambda parsed, problems, partners: CardPaymentsConfig(parsed.card_payments.advance_notice_days),
    {"card_payments": SECTION}))


def load_card_payments(config_dir: Path) -> CardPaymentsConfig:
    return CARD_PAYMENTS_FILE.load(config_dir)
