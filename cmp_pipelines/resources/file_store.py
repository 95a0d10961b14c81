"""File stores: the flows see relative paths; the local backend maps them to folders under the data dir."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import dagster as dg

from cmp_pipelines import processes
from cmp_pipelines.crashpoints import crashpoint
from cmp_pipelines.services.files import StoredFile
from cmp_pipelines.settings import paths


class FileStore(dg.ConfigurableResource):
    """Base class: another backend (SFTP, object storage) implements these operations (`write_from` has a
    default built on `write_parts`)."""

    def list_files(self, folder: str) -> list[StoredFile]:
        raise NotImplementedError

    def read_bytes(self, path: str) -> bytes:
        raise NotImplementedError

    def write_bytes(self, path: str, data: bytes) -> str:
        raise NotImplementedError

    def write_parts(self, path: str, parts: Iterable[bytes | Path]) -> str:
        """Write the concatenation of byte strings and local files, streaming, so big outputs are not copied."""
        raise NotImplementedError

    def write_from(self, path: str, produce: Callable[[Path], None]) -> str:
        """Store the file `produce` writes at the local path it is given (e.g. DuckDB's COPY). This default
        stages it in a temporary file; a local backend lets it write in place and saves the copy."""
        handle, tmp = tempfile.mkstemp(suffix=".part")
        os.close(handle)
        try:
            produce(Path(tmp))
            return self.write_parts(path, [Path(tmp)])
        finally:
            os.unlink(tmp)

    def exists(self, path: str) -> bool:
        raise NotImplementedError

    def move(self, source: str, destination: str) -> str:
        raise NotImplementedError


class LocalFileStore(FileStore):
    """Folders under `base_dir` (default `$CMP_DATA_DIR`). Writes are atomic; moves never overwrite."""

    base_dir: str | None = None

    def root(self) -> Path:
        return Path(self.base_dir) if self.base_dir else paths().data_dir

    def _abs(self, path: str) -> Path:
        target = (self.root() / path).resolve()
        if not target.is_relative_to(self.root().resolve()):
            raise ValueError(f"path {path!r} escapes the file store")
        return target

    def list_files(self, folder: str) -> list[StoredFile]:
        base = self._abs(folder)
        found = []
        if not base.exists():
            return found
        for entry in sorted(base.rglob("*")):
            name = entry.name
            if name.startswith(".") or name.endswith((".part", ".tmp")) or not entry.is_file():
                continue
            stat = entry.stat()
            rel = entry.relative_to(self.root().resolve()).as_posix()
            found.append(StoredFile(rel, stat.st_size, max(stat.st_mtime_ns, stat.st_ctime_ns)))
        return found

    def read_bytes(self, path: str) -> bytes:
        return self._abs(path).read_bytes()

    def write_bytes(self, path: str, data: bytes) -> str:
        return self.write_parts(path, [data])

    def write_parts(self, path: str, parts: Iterable[bytes | Path]) -> str:
        def produce(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                for part in parts:
                    if isinstance(part, Path):
                        with open(part, "rb") as source:
                            shutil.copyfileobj(source, handle, 16 << 20)
                    else:
                        handle.write(part)

        return self.write_from(path, produce)

    def write_from(self, path: str, produce: Callable[[Path], None]) -> str:
        """Written beside the target under a name of its own, made durable, renamed over it, and the rename made
        durable too: a reader never sees half a file, and a crash never loses one the store has recorded."""
        target = self._abs(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{processes.token()}.{secrets.token_hex(4)}.part")  # one per writer
        try:
            produce(tmp)
            with open(tmp, "rb+") as written:
                os.fsync(written.fileno())
            tmp.replace(target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        crashpoint(f"published {path}")
        return path

    def exists(self, path: str) -> bool:
        return self._abs(path).is_file()

    def sweep_parts(self, folders: Iterable[str] = ("outbound", "quarantine")) -> list[str]:
        """Remove the half-written files of writers that are gone (a run killed while writing a document):
        each part file names its writer process, so a live writer's part is never touched."""
        removed = []
        for folder in folders:
            base = self.root() / folder
            for entry in base.rglob(".*.part") if base.is_dir() else []:
                owner = entry.name.rsplit(".", 3)[-3] if entry.name.count(".") >= 4 else ""
                if owner and not processes.alive(owner) and not entry.is_symlink():
                    entry.unlink(missing_ok=True)
                    removed.append(entry.relative_to(self.root()).as_posix())
        return removed

    def move(self, source: str, destination: str) -> str:
        """Move, adding a numeric suffix when the destination exists, so no file is ever overwritten."""
        src, dest = self._abs(source), self._abs(destination)
        dest.parent.mkdir(parents=True, exist_ok=True)
        candidate, counter = dest, 1
        while candidate.exists():
            candidate = dest.with_name(f"{dest.name}.{counter}")
            counter += 1
        shutil.move(src, candidate)
        crashpoint(f"moved {source}")
        return candidate.relative_to(self.root().resolve()).as_posix()
