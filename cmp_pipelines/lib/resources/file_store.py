"""File stores: the flows see relative paths; the local backend maps them to folders under the data dir."""

from __future__ import annotations

import errno
import io
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, closing, contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, ClassVar

import dagster as dg

from cmp_pipelines.core import processes
from cmp_pipelines.core.crashpoints import crashpoint
from cmp_pipelines.core.files.store import NotARegularFile, StoredFile, kind_of
from cmp_pipelines.core.settings import paths, scratch_dir


class FileStore(dg.ConfigurableResource):
    """Base class: another backend (SFTP, object storage) implements these operations (`write_from` has a
    default built on `write_parts`)."""

    @property
    def shared(self) -> bool:
        """True when other machines see the same files (then sensors claim a file before asking for its run)."""
        return False

    def list_files(self, folder: str) -> list[StoredFile]:
        raise NotImplementedError

    def list_entries(self, folder: str) -> list[StoredFile]:
        """Regular files and the entries refused beside them (kind other than "file"), so they are reported."""
        return self.list_files(folder)

    def folder_stamp(self, folder: str) -> tuple | None:
        """Something that changes when an entry is added, renamed or removed in `folder` or the folders directly in
        it (an inbound feed's partner folders), cheap enough to ask several times a second; None when this store
        cannot say so cheaply (then nobody waits on it)."""
        return None

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

    def stage(self, path: str, produce: Callable[[Path], None]) -> Path:
        """`write_from` in two halves, for a document rendered before it may be published (core/files/prepared.py):
        the file `produce` writes, kept where `publish_staged` publishes it from, and not visible at `path` yet.
        The caller publishes it or removes it. This default keeps it in this process's scratch folder, which the next
        run start sweeps if the process dies first (`settings.sweep_scratch`)."""
        handle, tmp = tempfile.mkstemp(prefix="cmp-staged-", suffix=".part", dir=scratch_dir())
        os.close(handle)
        try:
            produce(Path(tmp))
        except BaseException:
            os.unlink(tmp)
            raise
        return Path(tmp)

    # whether publishing replaces a document already at the path (a local folder does; the object store keeps the
    # first version of a key): a digest taken of the staged file describes what is published only if it does
    replaces_published: ClassVar[bool] = False

    def publish_staged(self, path: str, staged: Path) -> str:
        """Publish at `path` the file `stage` kept; it is gone afterwards, published or not."""
        try:
            return self.write_parts(path, [staged])
        finally:
            staged.unlink(missing_ok=True)

    def exists(self, path: str) -> bool:
        raise NotImplementedError

    def move(self, source: str, destination: str) -> str:
        raise NotImplementedError

    def open_read(self, path: str) -> AbstractContextManager[BinaryIO]:
        """A reader of the document at `path` (streamed where the backend can)."""
        return closing(io.BytesIO(self.read_bytes(path)))

    def claim(self, path: str, owner: str) -> str:
        """Write `owner` at `path` unless a claim is already there; returns the claim's owner either way, so of
        two claimers racing for one path exactly one reads back its own name."""
        raise NotImplementedError


FILES_URL_SETTING = "CMP_FILES_URL"


def configured_file_store() -> FileStore:
    """The store `CMP_FILES_URL` names: unset, the local data folder; `s3://bucket/prefix`, the object store."""
    url = (os.environ.get(FILES_URL_SETTING) or "").strip()
    if not url:
        return LocalFileStore()
    from cmp_pipelines.lib.resources.s3_store import S3FileStore, parse_files_url

    parse_files_url(url)  # a malformed setting is refused here, by name
    return S3FileStore(url=url)


def object_store() -> FileStore | None:
    """The configured store when it is not the local data folder: transports (delivery, SFTP pickup) then read
    and write documents through it instead of the data folder."""
    store = configured_file_store()
    return None if isinstance(store, LocalFileStore) else store


def document_source():
    """How a transport opens a published document: None (the data folder) or the object store's reader."""
    store = object_store()
    return None if store is None else store.open_read


class LocalFileStore(FileStore):
    """Folders under `base_dir` (default `$CMP_DATA_DIR`). Writes are atomic; moves never overwrite.

    Partners write into inbound folders (SFTP can create symlinks), so the store never follows a link below its
    root: folders are opened one by one with O_NOFOLLOW, files are read from a descriptor opened with O_NOFOLLOW
    and checked with fstat, and a move renames the entry itself. A symlink, FIFO, socket or device is refused
    with `NotARegularFile` and left where it is.
    """

    base_dir: str | None = None

    def root(self) -> Path:
        return Path(self.base_dir) if self.base_dir else paths().data_dir

    def _abs(self, path: str) -> Path:
        """The absolute path, with the last component unresolved: a link there is the entry, not its target."""
        parts = _parts(path)
        target = self.root().resolve().joinpath(*parts)
        if target.parent.resolve() != target.parent:
            raise ValueError(f"path {path!r} passes through a symbolic link below the file store; refused")
        return target

    @contextmanager
    def _folder(self, parts: list[str], create: bool = False) -> Iterator[int]:
        """A descriptor of the folder `parts` below the root, each step opened without following a link."""
        fds = [os.open(self.root().resolve(), _DIR_FLAGS)]
        try:
            for index, name in enumerate(parts):
                try:
                    fds.append(os.open(name, _DIR_FLAGS, dir_fd=fds[-1]))
                except FileNotFoundError:
                    if not create:
                        raise
                    with suppress(FileExistsError):
                        os.mkdir(name, dir_fd=fds[-1])
                    fds.append(os.open(name, _DIR_FLAGS, dir_fd=fds[-1]))
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    folder = "/".join(parts[: index + 1])
                    raise NotARegularFile(folder, "symlink") from None
            yield fds[-1]
        finally:
            for fd in reversed(fds):
                os.close(fd)

    def _entry(self, folder_fd: int, name: str, path: str) -> os.stat_result:
        """The entry's own status (never its target's); NotARegularFile unless it is a regular file."""
        status = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
        if not stat.S_ISREG(status.st_mode):
            raise NotARegularFile(path, kind_of(status.st_mode))
        return status

    def list_entries(self, folder: str) -> list[StoredFile]:
        """Every entry below `folder` (regular files and what is refused), without following any link."""
        found: list[StoredFile] = []
        parts = _parts(folder)
        try:
            with self._folder(parts) as fd:
                self._walk(fd, folder, found)
        except FileNotFoundError:
            return []
        except NotARegularFile:  # the folder itself (or one above it) is a link: refused, never followed
            return [StoredFile(folder, 0, 0, "symlink")]
        return sorted(found, key=lambda f: f.path)

    def folder_stamp(self, folder: str) -> tuple | None:
        """Per folder - `folder` and the folders directly in it (the partners') - its change time and the names in
        it: a create or a rename changes the names even within one tick of a coarse file-system clock; a file still
        growing changes neither (the scan's settle rule handles it). Links are neither followed nor entered, as in
        `list_entries`; None past FOLDER_STAMP_LIMIT folders (a tick then does not wait)."""
        stamps: list[tuple] = []

        def stamp(fd: int, path: str) -> list[str]:
            with os.scandir(fd) as entries:
                listed = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
            stamps.append((path, os.fstat(fd).st_mtime_ns, hash(tuple(sorted(name for name, _ in listed)))))
            return sorted(name for name, is_dir in listed if is_dir)

        try:
            with self._folder(_parts(folder)) as fd:
                partners = stamp(fd, folder)
                if len(partners) > FOLDER_STAMP_LIMIT:
                    return None
                for name in partners:
                    try:
                        sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
                    except OSError:
                        stamps.append((f"{folder}/{name}", -1, 0))  # gone, or swapped for a link, since the listing
                        continue
                    try:
                        stamp(sub, f"{folder}/{name}")
                    except OSError:
                        stamps.append((f"{folder}/{name}", -1, 0))
                    finally:
                        os.close(sub)
        except (FileNotFoundError, NotARegularFile):
            return ()
        return tuple(stamps)

    def _walk(self, folder_fd: int, prefix: str, found: list[StoredFile]) -> None:
        with os.scandir(folder_fd) as entries:
            for entry in entries:
                path = f"{prefix}/{entry.name}"
                try:
                    status = entry.stat(follow_symlinks=False)
                    if not stat.S_ISDIR(status.st_mode):
                        if not (stat.S_ISREG(status.st_mode) and entry.name.startswith(".")):
                            found.append(_stored(path, status))  # hidden regular files are our own staging files
                        continue
                    sub = os.open(entry.name, _DIR_FLAGS, dir_fd=folder_fd)
                except FileNotFoundError:
                    continue  # moved away (archived by a run) while we listed
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    with suppress(FileNotFoundError):  # swapped for a link since the listing: refused like one
                        found.append(_stored(path, os.stat(entry.name, dir_fd=folder_fd, follow_symlinks=False)))
                    continue
                try:
                    self._walk(sub, path, found)
                finally:
                    os.close(sub)

    def list_files(self, folder: str) -> list[StoredFile]:
        return [entry for entry in self.list_entries(folder) if entry.kind == "file"]

    def read_bytes(self, path: str) -> bytes:
        with self.open_read(path) as handle:
            return handle.read()

    def open_read(self, path: str) -> BinaryIO:
        """The regular file at `path` opened for reading, streamed (a 250 MB partner file is hashed without being
        held in memory); links and special files are refused as by `list_entries`."""
        parts = _parts(path)
        with self._folder(parts[:-1]) as folder:
            self._entry(folder, parts[-1], path)
            try:
                fd = os.open(parts[-1], _READ_FLAGS, dir_fd=folder)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise NotARegularFile(path, "symlink") from None
                raise
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):  # swapped since the check: the descriptor says what was opened
                raise NotARegularFile(path, kind_of(mode))
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def write_bytes(self, path: str, data: bytes) -> str:
        return self.write_parts(path, [data])

    def write_parts(self, path: str, parts: Iterable[bytes | Path]) -> str:
        def produce(tmp: Path) -> None:
            write_parts_to(tmp, parts)

        return self.write_from(path, produce)

    def write_from(self, path: str, produce: Callable[[Path], None]) -> str:
        """Written beside the target under a name of its own, made durable, renamed over it, and the rename made
        durable too: a reader never sees half a file, and a crash never loses one the store has recorded."""
        return self.publish_staged(path, self.stage(path, produce))

    def stage(self, path: str, produce: Callable[[Path], None]) -> Path:
        """Written and made durable beside the target under a name of its own (swept by `sweep_parts` if its writer
        dies before publishing it). The staging name falls back to a short one when the target's is long, so any
        name the folder can hold can be written."""
        target = self._abs(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        writer = f"{processes.token()}.{secrets.token_hex(6)}.part"  # one per writer, named
        staged = f".{target.name}.{writer}"
        tmp = target.with_name(staged if len(staged.encode("utf-8", "surrogateescape")) <= 255 else f".{writer}")
        try:
            produce(tmp)
            with open(tmp, "rb+") as written:
                os.fsync(written.fileno())
                status = os.fstat(written.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _STAGED[str(tmp)] = (status.st_dev, status.st_ino)
        return tmp

    replaces_published: ClassVar[bool] = True

    def publish_staged(self, path: str, staged: Path) -> str:
        """The staged file renamed over the target, and the rename made durable; removed if it cannot be (left for
        `sweep_parts` only if its folder cannot be opened safely any more).

        A document may stay staged between two steps, its folder writable by others (SFTP). So the rename goes
        through the folder opened without following links, and only the very file `stage` wrote is published (its
        device and inode, checked before the rename and again after it, which closes the gap between the two): a
        link (to the store's database, a key), a FIFO or another file put in its place is refused, its entry
        removed (never what it names), and nothing is left published."""
        expected = _STAGED.pop(str(staged), None)
        parts = _parts(path)
        target = self._abs(path)
        if staged.parent != target.parent:
            raise ValueError(f"{staged} was not staged beside {path}")
        with self._folder(parts[:-1]) as folder:
            try:
                self._check_staged(folder, staged.name, expected, path, "was replaced by")
                os.rename(staged.name, target.name, src_dir_fd=folder, dst_dir_fd=folder)
                try:
                    self._check_staged(folder, target.name, expected, path, "was swapped as it was renamed, for")
                except OSError:
                    with suppress(OSError):
                        os.unlink(target.name, dir_fd=folder)
                    raise
                os.fsync(folder)
            except BaseException:
                with suppress(OSError):
                    os.unlink(staged.name, dir_fd=folder)  # the entry itself, never what a link names
                raise
        crashpoint(f"published {path}")
        return path

    @staticmethod
    def _check_staged(folder: int, name: str, expected: tuple[int, int] | None, path: str, what: str) -> None:
        """The entry is the regular file `stage` wrote (its device and inode; any regular file if unknown)."""
        status = os.stat(name, dir_fd=folder, follow_symlinks=False)
        if stat.S_ISREG(status.st_mode) and expected in (None, (status.st_dev, status.st_ino)):
            return
        found = "another file" if stat.S_ISREG(status.st_mode) else f"a {kind_of(status.st_mode)}"
        raise OSError(errno.EPERM, f"{path} was not published: the file staged for it {what} {found}; refused")

    def exists(self, path: str) -> bool:
        """True for a regular file, False when nothing is there; NotARegularFile for anything else."""
        parts = _parts(path)
        try:
            with self._folder(parts[:-1]) as folder:
                self._entry(folder, parts[-1], path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return True

    def sweep_parts(self, folders: Iterable[str] = ("outbound", "quarantine")) -> list[str]:
        """Remove the half-written files of writers that are gone (a run killed while writing a document):
        each part file names its writer process, so a live writer's part is never touched."""
        removed = []
        for folder in folders:
            base = self.root() / folder
            for entry in base.rglob(".*.part") if base.is_dir() else []:
                owner = entry.name.rsplit(".", 3)[-3] if entry.name.count(".") >= 3 else ""
                if owner and not processes.alive(owner) and not entry.is_symlink() and entry.is_file():
                    entry.unlink(missing_ok=True)
                    removed.append(entry.relative_to(self.root()).as_posix())
        return removed

    def move(self, source: str, destination: str) -> str:
        """Rename the entry itself (never a link's target), adding a numeric suffix when the destination exists,
        so no file is ever overwritten. Only a regular file is moved; anything else stays where it is."""
        src_parts, dest_parts = _parts(source), _parts(destination)
        with self._folder(src_parts[:-1]) as src_folder:
            self._entry(src_folder, src_parts[-1], source)
            with self._folder(dest_parts[:-1], create=True) as dest_folder:
                candidate, counter = dest_parts[-1], 1
                while _present(candidate, dest_folder):
                    candidate = f"{dest_parts[-1]}.{counter}"
                    counter += 1
                try:
                    os.rename(src_parts[-1], candidate, src_dir_fd=src_folder, dst_dir_fd=dest_folder)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    moved = "/".join([*dest_parts[:-1], candidate])
                    self.write_bytes(moved, self.read_bytes(source))  # another file system: copy, then remove
                    os.unlink(src_parts[-1], dir_fd=src_folder)
                os.fsync(dest_folder)
            os.fsync(src_folder)
        crashpoint(f"moved {source}")
        return "/".join([*dest_parts[:-1], candidate])

    def claim(self, path: str, owner: str) -> str:
        """O_CREAT|O_EXCL: the file system lets exactly one creator make the file."""
        parts = _parts(path)
        with self._folder(parts[:-1], create=True) as folder:
            try:
                fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640,
                             dir_fd=folder)
            except FileExistsError:
                return self.read_bytes(path).decode()
            with os.fdopen(fd, "wb") as handle:
                handle.write(owner.encode())
                handle.flush()
                os.fsync(handle.fileno())
            os.fsync(folder)
        return owner


FOLDER_STAMP_LIMIT = 256  # partner folders in one feed's inbound folder a waiting tick watches, at most
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO must not block the open


# what each file this process staged is (device, inode), by its path: `publish_staged` publishes only that file
_STAGED: dict[str, tuple[int, int]] = {}


def write_parts_to(target: Path, parts: Iterable[bytes | Path]) -> None:
    """`parts` (bytes, or local files of any size, streamed) one after the other into the file `target`: the
    staging both stores publish from."""
    with open(target, "wb") as handle:
        for part in parts:
            if isinstance(part, Path):
                with open(part, "rb") as source:
                    shutil.copyfileobj(source, handle, 16 << 20)
            else:
                handle.write(part)


def _parts(path: str) -> list[str]:
    parts = path.split("/")
    if not path or path.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"path {path!r} escapes the file store")
    return parts


def _present(name: str, folder_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _stored(path: str, status: os.stat_result) -> StoredFile:
    return StoredFile(path, status.st_size, max(status.st_mtime_ns, status.st_ctime_ns), kind_of(status.st_mode),
                      status.st_ino)
