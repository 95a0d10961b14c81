"""Transports: how a document reaches a partner, and how a partner's files are picked up from its SFTP folder.

Both transports write under a temporary name and rename, so the partner never sees half a file under the real
name; neither overwrites a final name. A final name already holding the same bytes (a retry after the rename
went through but the result was lost) counts as sent without sending again; different bytes are an error.

SFTP goes through asyncssh with the server's key pinned in the configuration (a public key or a known_hosts
file): an unknown or changed key is refused. Error texts name the host, the file and the reason, never a key.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import posixpath
import secrets
import shutil
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import duckdb

from cmp_pipelines.core.config import LocalTransport, Partner, SftpPickup, SftpTransport
from cmp_pipelines.core.delivery import Connect, Delivery, DeliveryReport, DeliveryResult, deliver_due, file_digest
from cmp_pipelines.core.files.store import FileStoreLike, stored_digest

PART_SUFFIX = ".part"
CHUNK = 256 * 1024


class TransportError(RuntimeError):
    """A transfer failed; the message is safe to log and store (no key material)."""


Source = Callable[[str], AbstractContextManager[BinaryIO]]  # opens a published document by its store path


def local_source(data_dir: Path) -> Source:
    return lambda local_path: open(data_dir / local_path, "rb")


# ---- local folder ----------------------------------------------------------------------------------------------


def local_folder(transport: LocalTransport, data_dir: Path) -> Path:
    folder = Path(transport.folder)
    return folder if folder.is_absolute() else data_dir / folder


def send_local(transport: LocalTransport, data_dir: Path, items: list[Delivery],
               source: Source | None = None) -> list[DeliveryResult]:
    folder = local_folder(transport, data_dir)
    opened = source or local_source(data_dir)
    results = []
    for item in items:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / item.remote_name
            if target.exists():
                results.append(_already_there(item, *file_digest(target), f"{folder}"))
                continue
            tmp = folder / f".{item.remote_name}.{secrets.token_hex(6)}{PART_SUFFIX}"
            try:
                with opened(item.local_path) as source, open(tmp, "wb") as out:
                    shutil.copyfileobj(source, out, 16 << 20)
                    out.flush()
                    os.fsync(out.fileno())
                if _link_no_replace(tmp, target):
                    results.append(DeliveryResult(item.delivery_id, True, f"copied to {target}"))
                else:
                    results.append(_already_there(item, *file_digest(target), f"{folder}"))
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as exc:
            results.append(DeliveryResult(item.delivery_id, False, f"local folder {folder}: {_os_error(exc)}"))
    return results


def _link_no_replace(tmp: Path, target: Path) -> bool:
    """Publish `tmp` as `target` unless something is there already (a second deliverer): a hard link never
    replaces, unlike os.replace."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        return False
    except OSError:  # a share without hard links: check, then rename (a narrow window, on such folders only)
        if target.exists():
            return False
        os.replace(tmp, target)
    return True


def _already_there(item: Delivery, sha: str, size: int, where: str) -> DeliveryResult:
    if sha == item.sha256 and size == item.size_bytes:
        return DeliveryResult(item.delivery_id, True, f"already at {where}/{item.remote_name}; not sent again")
    return DeliveryResult(item.delivery_id, False, f"{where}/{item.remote_name} already exists with other content "
                                                   f"({size} bytes); refusing to overwrite it")


def _os_error(exc: OSError) -> str:
    return f"{exc.strerror or type(exc).__name__} ({exc.__class__.__name__})"


# ---- a relative folder in the object store ---------------------------------------------------------------------


def send_to_store(transport: LocalTransport, store: FileStoreLike, items: list[Delivery],
                  source: Source) -> list[DeliveryResult]:
    """A local transport's relative folder when the documents live in an object store: `<folder>/<name>` in the
    store, because on several machines a relative folder would be the disk of whichever worker delivered (an
    absolute folder is a share every machine mounts, and stays a folder). Published as the store publishes (one
    conditional write, never overwriting); a name already there counts as sent only when it holds the document's
    bytes."""
    folder = transport.folder.strip("/")
    results = []
    for item in items:
        target = f"{folder}/{item.remote_name}"
        try:
            written = False
            if not store.exists(target):
                store.write_from(target, lambda tmp, item=item: _copy_to(source, item.local_path, tmp))
                written = True
            sha, size = stored_digest(store, target, CHUNK)
            if written and (sha, size) == (item.sha256, item.size_bytes):
                results.append(DeliveryResult(item.delivery_id, True, f"copied to the object store's {target}"))
            else:  # a second deliverer's copy (the same bytes: sent) or another document (refused)
                results.append(_already_there(item, sha, size, f"the object store's {folder}"))
        except (OSError, ValueError) as exc:
            why = _os_error(exc) if isinstance(exc, OSError) else str(exc)
            results.append(DeliveryResult(item.delivery_id, False, f"object store folder {folder}: {why}"))
    return results


def _copy_to(source: Source, local_path: str, target: Path) -> None:
    with source(local_path) as document, open(target, "wb") as out:
        shutil.copyfileobj(document, out, 16 << 20)


# ---- SFTP ------------------------------------------------------------------------------------------------------


def _connect_options(transport: SftpTransport, keys_dir: Path) -> dict:
    import asyncssh

    key_path = Path(transport.key_file)
    key_path = key_path if key_path.is_absolute() else keys_dir / key_path
    if not key_path.is_file():
        raise TransportError(f"SFTP {transport.user}@{transport.host}: key file {key_path} not found")
    if transport.host_key is not None:
        try:
            line = transport.host_key.strip()
            fields = line.split()
            key_text = line if fields[0].startswith(("ssh-", "ecdsa-")) else " ".join(fields[1:])
            known_hosts = ([asyncssh.import_public_key(key_text)], [], [])
        except (asyncssh.KeyImportError, IndexError) as exc:
            raise TransportError(f"SFTP {transport.host}: host_key is not a public key: {exc}") from None
    else:
        path = Path(transport.known_hosts_file or "")
        path = path if path.is_absolute() else keys_dir / path
        if not path.is_file():
            raise TransportError(f"SFTP {transport.host}: known_hosts file {path} not found")
        known_hosts = str(path)
    try:
        client_key = asyncssh.read_private_key(str(key_path))
    except (asyncssh.KeyImportError, OSError) as exc:
        raise TransportError(f"SFTP {transport.user}@{transport.host}: cannot read key file {key_path}: "
                             f"{type(exc).__name__}") from None
    return {"host": transport.host, "port": transport.port, "username": transport.user,
            "client_keys": [client_key], "known_hosts": known_hosts, "agent_path": None, "password": None,
            "connect_timeout": transport.connect_timeout_seconds, "login_timeout": transport.connect_timeout_seconds,
            "preferred_auth": "publickey", "config": None}


def _describe(exc: BaseException, transport: SftpTransport) -> str:
    import asyncssh

    where = f"SFTP {transport.user}@{transport.host}:{transport.port}"
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return f"{where}: the server's host key does not match the pinned key; refused (connection not trusted)"
    if isinstance(exc, asyncssh.PermissionDenied):
        return f"{where}: authentication refused for user {transport.user}"
    if isinstance(exc, asyncssh.SFTPError):
        return f"{where}: {exc.reason} (SFTP code {exc.code})"
    if isinstance(exc, asyncssh.DisconnectError | asyncssh.ChannelOpenError | ConnectionError | EOFError):
        return f"{where}: connection lost: {getattr(exc, 'reason', '') or type(exc).__name__}"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return f"{where}: timed out"
    if isinstance(exc, OSError):
        return f"{where}: {_os_error(exc)}"
    if isinstance(exc, TransportError):
        return str(exc)
    return f"{where}: {type(exc).__name__}: {exc}"


async def _remote_digest(sftp, path: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    async with sftp.open(path, "rb") as handle:
        while chunk := await handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


async def _exists(sftp, path: str):
    import asyncssh

    try:
        return await sftp.stat(path)
    except asyncssh.SFTPNoSuchFile:
        return None


async def _upload(sftp, opened: Source, folder: str, item: Delivery, transport: SftpTransport) -> DeliveryResult:
    final = posixpath.join(folder, item.remote_name)
    where = f"sftp://{transport.host}{'' if folder.startswith('/') else '/'}{folder}"
    attrs = await _exists(sftp, final)
    if attrs is not None:
        if attrs.size == item.size_bytes:
            return _already_there(item, *(await _remote_digest(sftp, final)), where)
        return _already_there(item, "-", attrs.size or 0, where)
    part = final + PART_SUFFIX
    async with sftp.open(part, "wb") as out:
        with opened(item.local_path) as source:
            offset = 0
            while chunk := source.read(CHUNK):
                await out.write(chunk, offset)
                offset += len(chunk)
    written = (await sftp.stat(part)).size
    if written != item.size_bytes:
        raise TransportError(f"SFTP {transport.host}: {part} holds {written} bytes, {item.size_bytes} sent")
    try:
        await sftp.rename(part, final)  # SFTP v3 rename: fails when `final` exists, so nothing is overwritten
    except Exception:
        attrs = await _exists(sftp, final)
        if attrs is None:
            raise
        return _already_there(item, *(await _remote_digest(sftp, final)), where)
    return DeliveryResult(item.delivery_id, True, f"uploaded to {where}/{item.remote_name}")


async def _send_sftp(transport: SftpTransport, keys_dir: Path, opened: Source,
                     items: list[Delivery]) -> list[DeliveryResult]:
    import asyncssh

    options = _connect_options(transport, keys_dir)
    results: list[DeliveryResult] = []
    async with asyncssh.connect(**options) as conn, conn.start_sftp_client() as sftp:
        for item in items:
            try:
                results.append(await _upload(sftp, opened, transport.remote_folder, item, transport))
            except (asyncssh.SFTPError, OSError, TransportError) as exc:
                results.append(DeliveryResult(item.delivery_id, False, _describe(exc, transport)))
                if isinstance(exc, ConnectionError | asyncssh.SFTPConnectionLost):
                    break  # the session is gone: the rest fail as not attempted, and are retried
    return results


def send_sftp(transport: SftpTransport, keys_dir: Path, data_dir: Path, items: list[Delivery],
              source: Source | None = None) -> list[DeliveryResult]:
    try:
        results = asyncio.run(_send_sftp(transport, keys_dir, source or local_source(data_dir), items))
    except Exception as exc:  # noqa: BLE001 (connecting failed: every document fails with the same reason)
        why = _describe(exc, transport)
        return [DeliveryResult(i.delivery_id, False, why) for i in items]
    done = {r.delivery_id for r in results}
    return results + [DeliveryResult(i.delivery_id, False, "not attempted: the connection was lost")
                      for i in items if i.delivery_id not in done]


def send(transport: LocalTransport | SftpTransport, data_dir: Path, keys_dir: Path,
         items: list[Delivery], source: Source | None = None,
         store: FileStoreLike | None = None) -> list[DeliveryResult]:
    """`store`: the object store the documents live in (CMP_FILES_URL), if any; a local transport's relative
    folder (the default `delivered/<partner>` included) is then a prefix of it, not a folder of this machine."""
    if isinstance(transport, SftpTransport):
        return send_sftp(transport, keys_dir, data_dir, items, source)
    if store is not None and not Path(transport.folder).is_absolute():
        return send_to_store(transport, store, items, source or store.open_read)
    return send_local(transport, data_dir, items, source)


# ---- SFTP pickup -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    path: str
    name: str
    size: int
    mtime: int


@dataclass
class PickupOutcome:
    feed: str
    remote_path: str
    local_path: str | None  # relative to the data dir; None when nothing was downloaded (already taken)
    sha256: str
    removed: bool
    error: str | None = None


Seen = Callable[[str, RemoteFile], str | None]  # (feed, file) -> sha256 when it was already downloaded
Record = Callable[[str, RemoteFile, str, str], None]  # (feed, file, local path, sha) after the rename, before removal


async def _pickup(transport: SftpTransport, keys_dir: Path, data_dir: Path, partner: str, seen: Seen,
                  record: Record, removed: Callable[[str, RemoteFile], None],
                  store: FileStoreLike | None = None) -> list[PickupOutcome]:
    import asyncssh

    options = _connect_options(transport, keys_dir)
    outcomes: list[PickupOutcome] = []
    async with asyncssh.connect(**options) as conn, conn.start_sftp_client() as sftp:
        for pickup in transport.pickup:
            for entry in await sftp.readdir(pickup.remote_folder):
                name = entry.filename
                regular = entry.attrs.type == asyncssh.FILEXFER_TYPE_REGULAR
                if name.startswith(".") or name.endswith(PART_SUFFIX) or not regular:
                    continue  # the partner's upload in progress, or a folder (processed/)
                remote = RemoteFile(posixpath.join(pickup.remote_folder, name), name, entry.attrs.size or 0,
                                    int(entry.attrs.mtime or 0))
                try:
                    outcomes.append(await _take(sftp, pickup, remote, data_dir, partner, seen, record, removed,
                                                store))
                except (asyncssh.SFTPError, OSError) as exc:
                    outcomes.append(PickupOutcome(pickup.feed, remote.path, None, "", False,
                                                  _describe(exc, transport)))
    return outcomes


async def _take(sftp, pickup: SftpPickup, remote: RemoteFile, data_dir: Path, partner: str, seen: Seen,
                record: Record, removed: Callable[[str, RemoteFile], None],
                store: FileStoreLike | None = None) -> PickupOutcome:
    """Download under a hidden temporary name, rename into the inbound folder, record it, then remove (or move)
    the remote file. A crash before the record downloads it again next time (the inbound flow refuses a second
    copy by its checksum); a crash after it only finishes the removal. With an object store (`store`), the
    download is staged in a local temporary file and published into the store's inbound prefix whole."""
    sha = seen(pickup.feed, remote)
    local_rel = None
    if sha is None and store is not None:
        sha, local_rel = await _take_into(sftp, remote, store, f"inbound/{pickup.feed}/{partner}")
        record(pickup.feed, remote, local_rel, sha)
    elif sha is None:
        folder = data_dir / "inbound" / pickup.feed / partner
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / remote.name
        if target.exists():
            target = folder / f"{Path(remote.name).stem}.{remote.mtime}{''.join(Path(remote.name).suffixes[-1:])}"
        tmp = folder / f".{remote.name}.{secrets.token_hex(6)}{PART_SUFFIX}"
        digest = hashlib.sha256()
        try:
            async with sftp.open(remote.path, "rb") as source:
                with open(tmp, "wb") as out:
                    while chunk := await source.read(CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                    out.flush()
                    os.fsync(out.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        sha = digest.hexdigest()
        local_rel = target.relative_to(data_dir).as_posix()
        record(pickup.feed, remote, local_rel, sha)
    if pickup.after_download == "move":
        processed = posixpath.join(posixpath.dirname(remote.path), pickup.processed_folder)
        if await _exists(sftp, processed) is None:
            await sftp.mkdir(processed)
        destination = posixpath.join(processed, remote.name)
        if await _exists(sftp, destination) is not None:
            destination = f"{destination}.{remote.mtime}"
        await sftp.rename(remote.path, destination)
    else:
        await sftp.remove(remote.path)
    removed(pickup.feed, remote)
    return PickupOutcome(pickup.feed, remote.path, local_rel, sha, True)


async def _take_into(sftp, remote: RemoteFile, store: FileStoreLike, folder: str) -> tuple[str, str]:
    target = f"{folder}/{remote.name}"
    if store.exists(target):
        target = f"{folder}/{Path(remote.name).stem}.{remote.mtime}{''.join(Path(remote.name).suffixes[-1:])}"
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(suffix=PART_SUFFIX) as out:
        async with sftp.open(remote.path, "rb") as source:
            while chunk := await source.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
        out.flush()
        store.write_parts(target, [Path(out.name)])
    return digest.hexdigest(), target


def pickup(transport: SftpTransport, keys_dir: Path, data_dir: Path, partner: str, seen: Seen, record: Record,
           removed: Callable[[str, RemoteFile], None], store: FileStoreLike | None = None) -> list[PickupOutcome]:
    """Every file waiting in the partner's pickup folders, into inbound/<feed>/<partner>/ of the data folder (or
    of `store`, an object store)."""
    try:
        return asyncio.run(_pickup(transport, keys_dir, data_dir, partner, seen, record, removed, store))
    except Exception as exc:  # noqa: BLE001 (an unreachable partner is reported, the others are polled)
        return [PickupOutcome("-", "-", None, "", False, _describe(exc, transport))]


def deliver_pending(connect: Connect, partners: dict[str, Partner], data_dir: Path, keys_dir: Path,
                    source: Source | None = None, store: FileStoreLike | None = None, **options) -> DeliveryReport:
    """The deliverer: every due document through its partner's configured transport (`delivery.deliver_due`).
    `source` opens a published document by its store path (default: the object store's `store`, else the data
    folder); with `store`, relative local folders are folders of the object store (`send`)."""

    def transport_of(partner: str) -> LocalTransport | SftpTransport:
        if partner not in partners:
            raise TransportError(f"partner {partner} is not in partners.yaml; nothing to send it through")
        return partners[partner].delivery_transport()

    source = source or (store.open_read if store is not None else None)
    return deliver_due(connect, lambda partner, items: send(transport_of(partner), data_dir, keys_dir, items, source,
                                                            store),
                       lambda partner: transport_of(partner).type, **options)


def pickup_inbound(con: duckdb.DuckDBPyConnection, partner: Partner, data_dir: Path, keys_dir: Path,
                   now: datetime, store: FileStoreLike | None = None) -> list[PickupOutcome]:
    """Poll the partner's SFTP pickup folders; `sftp_pickups` remembers each file taken (by remote path, size and
    time), so a file whose remote removal failed is removed next time, never downloaded twice."""
    transport = partner.transport
    if not isinstance(transport, SftpTransport) or not transport.pickup:
        return []
    key = "partner = ? AND feed = ? AND remote_path = ? AND size_bytes = ? AND remote_mtime = ?"

    def seen(feed: str, remote: RemoteFile) -> str | None:
        row = con.execute(f"SELECT sha256 FROM sftp_pickups WHERE {key}",
                          [partner.partner_id, feed, remote.path, remote.size, remote.mtime]).fetchone()
        return row[0] if row else None

    def record(feed: str, remote: RemoteFile, local_path: str, sha: str) -> None:
        con.execute("INSERT INTO sftp_pickups (partner, feed, remote_path, size_bytes, remote_mtime, local_path, "
                    "sha256, downloaded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [partner.partner_id, feed, remote.path, remote.size, remote.mtime, local_path, sha, now])

    def removed(feed: str, remote: RemoteFile) -> None:
        con.execute(f"UPDATE sftp_pickups SET removed_at = ? WHERE {key}",
                    [now, partner.partner_id, feed, remote.path, remote.size, remote.mtime])

    return pickup(transport, keys_dir, data_dir, partner.partner_id, seen, record, removed, store)
