"""What the flows need of a file store; any backend (local folders, object storage: `CMP_FILES_URL`) provides
this. The contract both implementations pass is tests/lib/test_file_store_contract.py."""

from __future__ import annotations

import errno
import hashlib
import stat
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol


@dataclass(frozen=True)
class StoredFile:
    path: str  # relative to the store root, '/'-separated: inbound/nrp/PAYPOINT/x.json.enc
    size: int
    changed_ns: int  # max(mtime, ctime): moving or copying a file in always advances it
    kind: str = "file"  # else why it is refused (kind_of): symlink, fifo, socket, device, folder
    inode: int = 0  # with the kind and the times, names one entry so it is reported once


def stored_digest(store: FileStoreLike, path: str, chunk: int = 1 << 20) -> tuple[str, int]:
    """sha256 (hex) and size of a stored document, read a chunk at a time: a 250 MB partner file is never whole in
    memory. The store's own errors (OSError, FileNotFoundError, NotARegularFile) pass through unchanged."""
    digest, size = hashlib.sha256(), 0
    with store.open_read(path) as handle:
        while block := handle.read(chunk):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


class NotARegularFile(OSError):
    """The entry is a symlink, FIFO, socket, device or folder: the store never reads, follows or moves it."""

    def __init__(self, path: str, kind: str):
        super().__init__(errno.EINVAL, refusal(path, kind))
        self.kind = kind


def kind_of(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def describe(kind: str) -> str:
    """What a refused entry is, in words: `kind` as `kind_of` names it."""
    return {"symlink": "a symbolic link", "fifo": "a FIFO (named pipe)", "socket": "a socket",
            "device": "a device", "folder": "a folder"}.get(kind, f"a {kind}")


def refusal(path: str, kind: str) -> str:
    return f"{path} is {describe(kind)}, not a regular file; it is never read, followed or moved"


class FileStoreLike(Protocol):
    def list_files(self, folder: str) -> list[StoredFile]: ...
    def list_entries(self, folder: str) -> list[StoredFile]: ...
    def read_bytes(self, path: str) -> bytes: ...
    def write_bytes(self, path: str, data: bytes) -> str: ...
    # staged whole, then published: when `parts` raises, nothing is published (the Bacs check relies on it)
    def write_parts(self, path: str, parts: Iterable[bytes | Path]) -> str: ...
    def write_from(self, path: str, produce: Callable[[Path], None]) -> str: ...
    def stage(self, path: str, produce: Callable[[Path], None]) -> Path: ...  # write_from's first half
    def publish_staged(self, path: str, staged: Path) -> str: ...  # and its second
    def exists(self, path: str) -> bool: ...
    def move(self, source: str, destination: str) -> str: ...
    def open_read(self, path: str) -> AbstractContextManager[BinaryIO]: ...
    def claim(self, path: str, owner: str) -> str: ...  # the claim's owner: `owner` only for the one claimer
