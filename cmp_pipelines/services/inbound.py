"""Finding new inbound files: a high-water mark over (change time, path), bounded work per scan."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from cmp_pipelines.domain.cards import find_pan, mask_pans_in
from cmp_pipelines.services.files import FileStoreLike
from cmp_pipelines.services.intake import partition_key, sha256_hex


@dataclass(frozen=True)
class PendingFile:
    path: str
    partner: str
    file_name: str
    partition_key: str
    run_key: str


@dataclass(frozen=True)
class Skipped:
    path: str
    why: str


def read_cursor(cursor: str | None) -> tuple[int, str]:
    if not cursor:
        return (0, "")
    data = json.loads(cursor)
    return (int(data["changed_ns"]), str(data["path"]))


def write_cursor(mark: tuple[int, str]) -> str:
    return json.dumps({"changed_ns": mark[0], "path": mark[1]})


STALE_AFTER_SECONDS = 15 * 60


def scan(
    files: FileStoreLike, feed: str, cursor: str | None, limit: int = 20, now_ns: int | None = None,
) -> tuple[list[PendingFile], list[Skipped], str | None]:
    """Files that arrived after the cursor, oldest first, at most `limit`; the new cursor (or the old one).

    A file still in the inbound folder long after it was requested means its run failed (processed files
    leave the folder): it is requested again, at most once an hour, so a transient failure heals itself.
    """
    mark = read_cursor(cursor)
    listing = files.list_files(f"inbound/{feed}")
    fresh = sorted((f for f in listing if (f.changed_ns, f.path) > mark), key=lambda f: (f.changed_ns, f.path))
    fresh = fresh[:limit]
    now_ns = time.time_ns() if now_ns is None else now_ns
    stale_before = now_ns - STALE_AFTER_SECONDS * 1_000_000_000
    stale = [f for f in listing if (f.changed_ns, f.path) <= mark and f.changed_ns < stale_before]
    retry_tag = f"#retry-{now_ns // 3_600_000_000_000}"
    pending, skipped = [], []
    for stored in [*fresh, *stale[: max(0, limit - len(fresh))]]:
        parts = stored.path.split("/")
        is_retry = (stored.changed_ns, stored.path) <= mark
        if not is_retry:
            mark = (stored.changed_ns, stored.path)
        if len(parts) != 4:
            skipped.append(Skipped(stored.path, f"not in a partner folder (inbound/{feed}/<PARTNER>/<file>)"))
            continue
        _, _, partner, file_name = parts
        if any(ord(char) < 32 or ord(char) == 127 for char in file_name):
            skipped.append(Skipped(stored.path.encode("unicode_escape").decode(),
                                   "the file name contains control characters; rename it to have it processed"))
            continue
        if find_pan(file_name):
            skipped.append(Skipped(mask_pans_in(stored.path) or "",
                                   "the file name contains a card number; rename it to have it processed"))
            continue
        try:
            digest = sha256_hex(files.read_bytes(stored.path))
        except FileNotFoundError:
            continue  # moved away between listing and reading: it was handled elsewhere
        except OSError as exc:
            skipped.append(Skipped(stored.path, f"could not be read ({exc.strerror or exc}); retried later"))
            continue
        key = partition_key(partner, file_name, digest)
        run_key = f"{key}#{stored.changed_ns}" + (retry_tag if is_retry else "")
        pending.append(PendingFile(stored.path, partner, file_name, key, run_key))
    new_cursor = write_cursor(mark) if fresh else cursor
    return pending, skipped, new_cursor
