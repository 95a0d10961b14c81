"""Finding new inbound files: a high-water mark over (change time, path), bounded work per scan."""

from __future__ import annotations

import json
from dataclasses import dataclass

from cmp_pipelines.domain.cards import find_pan, mask_pans_in
from cmp_pipelines.services.files import FileStoreLike
from cmp_pipelines.services.non_recurring import partition_key, sha256_hex


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


def scan(
    files: FileStoreLike, feed: str, cursor: str | None, limit: int = 20
) -> tuple[list[PendingFile], list[Skipped], str | None]:
    """Files that arrived after the cursor, oldest first, at most `limit`; the new cursor (or the old one)."""
    mark = read_cursor(cursor)
    fresh = sorted(
        (f for f in files.list_files(f"inbound/{feed}") if (f.changed_ns, f.path) > mark),
        key=lambda f: (f.changed_ns, f.path),
    )[:limit]
    pending, skipped = [], []
    for stored in fresh:
        parts = stored.path.split("/")
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
        key = partition_key(partner, file_name, digest)
        pending.append(PendingFile(stored.path, partner, file_name, key, f"{key}#{stored.changed_ns}"))
    new_cursor = write_cursor(mark) if fresh else cursor
    return pending, skipped, new_cursor
