"""What the flows need of a file store; any backend (local folders, object storage) provides this."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class StoredFile:
    path: str  # relative to the store root, '/'-separated: inbound/nrp/PAYPOINT/x.json.enc
    size: int
    changed_ns: int  # max(mtime, ctime): moving or copying a file in always advances it


class FileStoreLike(Protocol):
    def list_files(self, folder: str) -> list[StoredFile]: ...
    def read_bytes(self, path: str) -> bytes: ...
    def write_bytes(self, path: str, data: bytes) -> str: ...
    def write_parts(self, path: str, parts: Iterable[bytes | Path]) -> str: ...
    def write_from(self, path: str, produce: Callable[[Path], None]) -> str: ...
    def exists(self, path: str) -> bool: ...
    def move(self, source: str, destination: str) -> str: ...
