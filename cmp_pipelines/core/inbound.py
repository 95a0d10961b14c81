"""Finding new inbound files: a high-water mark over (change time, path), bounded work per scan.

Partners upload into these folders, so a scan trusts nothing it finds there: an entry that is not a regular
file (symlink, FIFO, socket, device), a name the store cannot keep, or a file still being written is never
taken. Refused entries come back as `Skipped(report=True)` for the sensor to report once and leave in place;
a file still being written holds the high-water mark until it settles (size and change time unchanged for the
partner's `settle_seconds`) or, for a partner that renames finished uploads, until it carries its final name.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from cmp_pipelines.core.cards import find_pan, mask_pans_in
from cmp_pipelines.core.config import DEFAULT_SETTLE_SECONDS, DEFAULT_UPLOAD_SUFFIXES, Partner, load_partners
from cmp_pipelines.core.files.store import FileStoreLike, NotARegularFile, StoredFile, describe, stored_digest
from cmp_pipelines.core.intake import partition_key
from cmp_pipelines.core.settings import paths

# The platform adds suffixes to an inbound name (`.error.json`, `.rejected.ack.json.enc`, `.N` when a name is
# taken): 200 bytes leaves room for them under the 255-byte NAME_MAX of Linux file systems.
MAX_NAME_BYTES = 200
STALE_AFTER_SECONDS = 15 * 60
CURSOR_ENTRIES = 1000  # observations and files taken ahead of the mark kept in the cursor, at most


@dataclass(frozen=True)
class PendingFile:
    path: str
    partner: str
    file_name: str
    partition_key: str
    run_key: str


@dataclass(frozen=True)
class Skipped:
    path: str  # safe to show: control characters and undecodable bytes escaped, card numbers masked
    why: str
    report: bool = False  # refused: reported once (job error, alert) and left where it is
    identity: str = ""  # names this entry (path, kind, inode, change time) for the report's run key


@dataclass
class _State:
    mark: tuple[int, str]
    seen: dict[str, list[int]]  # path -> [size, changed_ns, first observed at ns] of files not yet settled
    taken: dict[str, int]  # path -> changed_ns of files taken or refused beyond a mark held back

    def dump(self) -> str:
        return json.dumps({"changed_ns": self.mark[0], "path": self.mark[1], "seen": self.seen, "taken": self.taken})


def read_cursor(cursor: str | None) -> tuple[int, str]:
    return _read_state(cursor).mark


def _read_state(cursor: str | None) -> _State:
    if not cursor:
        return _State((0, ""), {}, {})
    data = json.loads(cursor)
    return _State((int(data["changed_ns"]), str(data["path"])), dict(data.get("seen", {})),
                  dict(data.get("taken", {})))


def write_cursor(mark: tuple[int, str]) -> str:
    return _State(mark, {}, {}).dump()


def display_path(path: str) -> str:
    """A path safe to log, store and show: undecodable bytes and control characters escaped, card numbers
    masked."""
    text = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    text = re.sub(r"[\x00-\x1f\x7f]", lambda m: m.group().encode("unicode_escape").decode(), text)
    return mask_pans_in(text) or ""


def _refused(stored: StoredFile, why: str) -> Skipped:
    digest = hashlib.sha256(stored.path.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return Skipped(display_path(stored.path), why, True, f"{digest}:{stored.kind}:{stored.inode}:{stored.changed_ns}")


def _not_regular(kind: str) -> str:
    return f"{describe(kind)}, not a regular file: never read, followed or moved; left where it is"


def _name_problem(stored: StoredFile, feed: str) -> str | None:
    """Why the store cannot take this entry under its name, or None."""
    if stored.kind != "file":
        return _not_regular(stored.kind)
    parts = stored.path.split("/")
    if len(parts) != 4:
        return f"not in a partner folder (inbound/{feed}/<PARTNER>/<file>)"
    try:
        stored.path.encode("utf-8")
    except UnicodeEncodeError:
        return "the name is not valid UTF-8; rename it to have it processed"
    file_name = parts[3]
    if any(ord(char) < 32 or ord(char) == 127 for char in stored.path):
        return "the file name contains control characters; rename it to have it processed"
    if find_pan(stored.path):
        return "the file name contains a card number; rename it to have it processed"
    size = len(file_name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        return (f"the file name is {size} bytes long; at most {MAX_NAME_BYTES} are taken (the platform adds "
                "suffixes such as .error.json to it); rename it to have it processed")
    return None


def _waiting(stored: StoredFile, partner: Partner | None, state: _State, now_ns: int) -> str | None:
    """Why this file may still be being written (it is not taken yet), or None when it is complete."""
    name = stored.path.rsplit("/", 1)[-1]
    renames = partner is not None and partner.upload_completion == "rename"
    if name.endswith((*DEFAULT_UPLOAD_SUFFIXES, *(partner.upload_suffixes if renames else ()))):
        return f"an upload in progress (renamed when complete; suffix {name.rsplit('.', 1)[-1]})"
    if renames:
        return None
    settle = partner.settle_seconds if partner is not None else DEFAULT_SETTLE_SECONDS
    settle_ns = settle * 1_000_000_000
    if settle == 0 or stored.changed_ns <= now_ns - settle_ns:
        return None
    seen = state.seen.get(stored.path)
    if seen and seen[:2] == [stored.size, stored.changed_ns] and now_ns - seen[2] >= settle_ns:
        return None
    return f"changed within the last {settle} s; taken once its size and time stay the same for {settle} s"


def scan(
    files: FileStoreLike, feed: str, cursor: str | None, limit: int = 20, now_ns: int | None = None,
    partners: Mapping[str, Partner] | None = None,
) -> tuple[list[PendingFile], list[Skipped], str | None]:
    """Files that arrived after the cursor, oldest first, at most `limit`; the new cursor (or the old one).

    A file still in the inbound folder long after it was requested means its run failed (processed files
    leave the folder): it is requested again, at most once an hour, so a transient failure heals itself.
    `partners` (default: config/partners.yaml) says how each partner marks an upload complete.
    A file not yet complete holds the mark back; files after it that are taken are remembered in the cursor
    (`taken`) so they are not requested again.
    """
    state = _read_state(cursor)
    before = state.dump()
    if partners is None:
        partners = load_partners(paths().config_dir)
    entries = files.list_entries(f"inbound/{feed}")
    beyond = sorted((f for f in entries if (f.changed_ns, f.path) > state.mark), key=lambda f: (f.changed_ns, f.path))
    fresh, counted = [], 0  # at most `limit` entries to handle now, plus those taken earlier (skipped, not counted)
    for entry in beyond:
        if counted >= limit:
            break
        fresh.append(entry)
        counted += state.taken.get(entry.path) != entry.changed_ns
    now_ns = time.time_ns() if now_ns is None else now_ns
    stale_before = now_ns - STALE_AFTER_SECONDS * 1_000_000_000
    stale = [f for f in entries if f.kind == "file" and (f.changed_ns, f.path) <= state.mark
             and f.changed_ns < stale_before and _name_problem(f, feed) is None]
    retry_tag = f"#retry-{now_ns // 3_600_000_000_000}"
    pending: list[PendingFile] = []
    skipped: list[Skipped] = []
    seen: dict[str, list[int]] = {}
    held = False  # a file not yet complete: the mark stays before it

    # A store whose change times are coarse or can lag the moment a file shows (S3: whole seconds, and a
    # multipart upload is dated when it began) says so; files that recent are remembered, not passed by the mark.
    lag_ns = getattr(files, "listing_lag_ns", 0)  # 0 for the local folder: its change times are exact
    settled_before = now_ns - lag_ns if lag_ns else None

    def recent(stored: StoredFile) -> bool:
        return settled_before is not None and stored.changed_ns > settled_before

    def passed(stored: StoredFile) -> None:
        if held or recent(stored):
            state.taken[stored.path] = stored.changed_ns
        else:
            state.mark = (stored.changed_ns, stored.path)

    for stored in [*fresh, *stale[: max(0, limit - counted)]]:
        if state.taken.get(stored.path) == stored.changed_ns:  # taken on an earlier tick beyond a held mark
            if not held and not recent(stored):
                state.mark = (stored.changed_ns, stored.path)
            continue
        is_retry = (stored.changed_ns, stored.path) <= state.mark
        problem = _name_problem(stored, feed)
        if problem is not None:
            skipped.append(_refused(stored, problem))
            passed(stored)
            continue
        _, _, partner, file_name = stored.path.split("/")
        waiting = _waiting(stored, partners.get(partner), state, now_ns)
        if waiting is not None and is_retry:
            continue  # an abandoned upload behind the mark: never taken, never holds the mark again
        if waiting is not None:
            previous = state.seen.get(stored.path)
            same = previous is not None and previous[:2] == [stored.size, stored.changed_ns]
            seen[stored.path] = previous if same else [stored.size, stored.changed_ns, now_ns]
            skipped.append(Skipped(display_path(stored.path), f"still being written: {waiting}"))
            if stored.changed_ns >= stale_before:
                held = True  # the mark stays before it; an upload idle for 15 minutes no longer holds it
            else:
                passed(stored)
            continue
        try:
            digest = stored_digest(files, stored.path)[0]  # streamed: never whole in the sensor's memory
        except FileNotFoundError:
            continue  # moved away between listing and reading: it was handled elsewhere
        except NotARegularFile as exc:  # swapped for a link or a FIFO since the listing
            skipped.append(_refused(stored, _not_regular(exc.kind)))
            continue
        except OSError as exc:
            if not is_retry:
                passed(stored)
            skipped.append(Skipped(display_path(stored.path), f"could not be read ({exc.strerror or exc}); "
                                                              "retried later"))
            continue
        if not is_retry:
            passed(stored)
        key = partition_key(partner, file_name, digest)
        run_key = f"{key}#{stored.changed_ns}" + (retry_tag if is_retry else "")
        pending.append(PendingFile(stored.path, partner, file_name, key, run_key))
    state.seen = dict(list(seen.items())[:CURSOR_ENTRIES])
    state.taken = dict(sorted(((p, c) for p, c in state.taken.items() if (c, p) > state.mark),
                              key=lambda item: (item[1], item[0]))[:CURSOR_ENTRIES])
    after = state.dump()
    return pending, skipped, (cursor if after == before else after)


def record_refusal(con, feed: str, entry: str, why: str, now) -> None:
    """A job error for an entry refused in an inbound folder (counted by the inbound_entries_refused probe)."""
    con.execute(
        "INSERT INTO job_errors (job, category, source_ref, detail, raised_at) VALUES (?, 'INBOUND_REFUSED', ?, ?, ?)",
        [feed, entry, why, now],
    )
