"""The file store on S3-compatible object storage (`CMP_FILES_URL=s3://bucket/prefix`), for runs on machines that
share no disk. boto3, the reference S3 client, speaks the conditional-write headers directly (`IfNoneMatch` on
PutObject and CompleteMultipartUpload); s3fs would add an fsspec layer over the same calls without exposing them.

- Paths map to keys `<prefix>/<path>`; the same path rules as the local store (no `..`, no leading `/`).
- Publishing is atomic: a document is one PUT, or a multipart upload completed in one call; S3 shows a key
  only once the request completes, so no reader ever sees part of one.
- A published document is never overwritten: every write is conditional (`If-None-Match: *`). A key that is
  already there is kept as it is (a re-run publishing the same acknowledgement again leaves the first, the one a
  partner may already have fetched) and the write returns its path.
- `move` (archive, quarantine) copies under the destination with the same condition, taking a numeric suffix
  when the name is taken, then deletes the source: the source disappears only once its copy is whole.
- `claim` writes a small marker object with `If-None-Match: *`: of two sensors or workers that see one file,
  exactly one gets it.
- Endpoint and credentials come from the environment (`CMP_S3_ENDPOINT_URL` or `AWS_ENDPOINT_URL`,
  `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, `AWS_REGION`, or an instance role): never in
  the resource's config (shown in the Dagster UI), never in a message - errors name the operation, the path and
  the server's error code only.
"""

from __future__ import annotations

import errno
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import closing, suppress
from pathlib import Path
from urllib.parse import urlsplit

from cmp_pipelines.core.crashpoints import crashpoint
from cmp_pipelines.core.files.store import StoredFile
from cmp_pipelines.lib.resources.file_store import FileStore, _parts, write_parts_to

ENDPOINT_SETTING = "CMP_S3_ENDPOINT_URL"
LISTING_LAG_SECONDS = 300
PART_BYTES = 64 << 20
CONFLICT_RETRIES = 5  # multipart part size; documents up to this size are one PUT


class ObjectStoreError(OSError):
    """An object-store call failed: names the operation, the path and the server's error code, nothing else."""


def parse_files_url(url: str) -> tuple[str, str]:
    """(bucket, prefix without slashes) of `s3://bucket/prefix`; a clear error naming the setting otherwise."""
    parts = urlsplit(url.strip())
    if parts.scheme != "s3" or not parts.netloc or parts.username or parts.password or parts.query:
        raise ValueError("CMP_FILES_URL must be s3://bucket/prefix (or unset for the local data folder); credentials "
                         "come from the AWS environment variables, never the URL")
    return parts.netloc, parts.path.strip("/")


_clients: dict[tuple, object] = {}
_clients_lock = threading.Lock()


def s3_client(endpoint_url: str | None = None):
    """One boto3 client per endpoint and identity (boto3 clients are thread-safe; creating one is not)."""
    import boto3
    from botocore.config import Config

    endpoint = endpoint_url or os.environ.get(ENDPOINT_SETTING) or None
    key = (endpoint, os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_REGION"),
           os.environ.get("AWS_DEFAULT_REGION"))
    with _clients_lock:
        if key not in _clients:
            session = boto3.session.Session()
            _clients[key] = session.client(
                "s3", endpoint_url=endpoint, region_name=session.region_name or "us-east-1",
                config=Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}),
            )
        return _clients[key]


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code") or type(exc).__name__)


def _status(exc: Exception) -> int:
    return int((getattr(exc, "response", None) or {}).get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _precondition_failed(exc: Exception) -> bool:
    """412: the key is already there (If-None-Match: *)."""
    return _status(exc) == 412 or _code(exc) == "PreconditionFailed"


def _conflict(exc: Exception) -> bool:
    """409: another conditional write of the key was in flight; S3 asks the caller to try again."""
    return _status(exc) == 409 or _code(exc) == "ConditionalRequestConflict"


class _Conflict(Exception):
    pass


UNSAFE_KEY = "key no path can name (`..`, `.` or an empty segment)"


def _kind(path: str) -> str:
    try:
        _parts(path)
    except ValueError:
        return UNSAFE_KEY
    return "file"


class S3FileStore(FileStore):
    """Files as objects under `s3://bucket/prefix`: the same operations and guarantees as `LocalFileStore`."""

    url: str
    endpoint_url: str | None = None
    part_bytes: int = PART_BYTES

    @property
    def shared(self) -> bool:
        return True

    @property
    def listing_lag_ns(self) -> int:
        """LastModified has whole seconds and dates a multipart upload from its start: the sensor's mark stays
        this far behind the clock (files newer than that are remembered in its cursor instead)."""
        return LISTING_LAG_SECONDS * 1_000_000_000

    # ---- keys -----------------------------------------------------------------------------------------

    def _client(self):
        return s3_client(self.endpoint_url)

    def _where(self) -> tuple[str, str]:
        return parse_files_url(self.url)

    def _key(self, path: str) -> str:
        _parts(path)  # refuses `..`, absolute paths and empty segments as the local store does
        prefix = self._where()[1]
        return f"{prefix}/{path}" if prefix else path

    def _path(self, key: str) -> str:
        prefix = self._where()[1]
        return key[len(prefix) + 1:] if prefix else key

    def _fail(self, operation: str, path: str, exc: Exception) -> OSError:
        code = _code(exc)
        if code in ("NoSuchKey", "404", "NotFound"):
            return FileNotFoundError(errno.ENOENT, f"{path} is not in the object store")
        return ObjectStoreError(errno.EIO, f"object store {operation} of {path} failed: {code}")

    # ---- reading ----------------------------------------------------------------------------------------

    def list_entries(self, folder: str) -> list[StoredFile]:
        """Every object below `folder`, by ListObjectsV2 pages of 1000. A key ending in `/` is a console's empty
        "folder" marker, not a file: left out. A key no path can name (`..`, `.` or empty segments) is listed as
        refused, so the sensor reports it once and leaves it."""
        bucket, _ = self._where()
        found: list[StoredFile] = []
        paginator, prefix = self._client().get_paginator("list_objects_v2"), self._key(folder) + "/"
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    path = self._path(item["Key"])
                    if path.endswith("/"):
                        continue
                    changed = int(item["LastModified"].timestamp() * 1_000_000) * 1000
                    found.append(StoredFile(path, int(item["Size"]), changed, _kind(path)))
        except Exception as exc:  # noqa: BLE001 - botocore raises several unrelated types; all become OSError
            raise self._fail("listing", folder, exc) from None
        return sorted(found, key=lambda f: f.path)

    def list_files(self, folder: str) -> list[StoredFile]:
        return [entry for entry in self.list_entries(folder) if entry.kind == "file"]

    def read_bytes(self, path: str) -> bytes:
        with self.open_read(path) as body:
            return body.read()

    def open_read(self, path: str):
        """The object's body, streamed (a transport copies it in chunks, never whole into memory). A read that fails
        part way (botocore's ResponseStreamingError or IncompleteReadError, neither an OSError) raises the store's
        ObjectStoreError, as `read_bytes` does: the sensor then retries the file on a later tick."""
        bucket, key = self._where()[0], self._key(path)
        try:
            body = self._client().get_object(Bucket=bucket, Key=key)["Body"]
        except Exception as exc:  # noqa: BLE001
            raise self._fail("read", path, exc) from None
        return closing(_Body(body, lambda exc: self._fail("read", path, exc)))

    def exists(self, path: str) -> bool:
        bucket, key = self._where()[0], self._key(path)
        try:
            self._client().head_object(Bucket=bucket, Key=key)
        except Exception as exc:  # noqa: BLE001
            failure = self._fail("lookup", path, exc)
            if isinstance(failure, FileNotFoundError):
                return False
            raise failure from None
        return True

    # ---- publishing -------------------------------------------------------------------------------------

    def write_bytes(self, path: str, data: bytes) -> str:
        self._key(path)
        return self._publish(path, lambda: self._put(path, data))

    def write_parts(self, path: str, parts: Iterable[bytes | Path]) -> str:
        """Staged in one local temporary file (parts may be local files of any size), then published whole."""
        return self.write_from(path, lambda tmp: write_parts_to(tmp, parts))

    def write_from(self, path: str, produce: Callable[[Path], None]) -> str:
        self._key(path)
        handle, tmp = tempfile.mkstemp(suffix=".part")
        os.close(handle)
        try:
            produce(Path(tmp))
            return self._publish(path, lambda: self._upload(path, Path(tmp)))
        finally:
            os.unlink(tmp)

    def publish_staged(self, path: str, staged: Path) -> str:
        """The file `stage` (the base class's: a local temporary file) kept, uploaded as `write_from` uploads."""
        try:
            self._key(path)
            return self._publish(path, lambda: self._upload(path, staged))
        finally:
            staged.unlink(missing_ok=True)

    def _publish(self, path: str, write: Callable[[], bool]) -> str:
        write()  # False: the key was already published; it is kept, never overwritten
        crashpoint(f"published {path}")
        return path

    def _put(self, path: str, data: bytes | object) -> bool:
        """One conditional PUT: True when written, False when the key was already there (412)."""
        bucket, key = self._where()[0], self._key(path)
        for attempt in range(CONFLICT_RETRIES):
            if attempt and hasattr(data, "seek"):
                data.seek(0)
            try:
                self._client().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
            except Exception as exc:  # noqa: BLE001
                if _precondition_failed(exc):
                    return False
                if _conflict(exc) and attempt + 1 < CONFLICT_RETRIES:
                    time.sleep(0.05 * 2 ** attempt)  # S3's answer to a concurrent conditional write: try again
                    continue
                raise self._fail("write", path, exc) from None
            return True
        raise AssertionError("unreachable")

    def _upload(self, path: str, local: Path) -> bool:
        """A file up to `part_bytes` is one PUT; a bigger one a multipart upload whose completion is the
        conditional write (aborted on any failure, so no part lingers)."""
        size = local.stat().st_size
        if size <= self.part_bytes:
            with open(local, "rb") as body:
                return self._put(path, body)
        for attempt in range(CONFLICT_RETRIES):
            try:
                return self._multipart(path, local)
            except _Conflict:
                time.sleep(0.05 * 2 ** attempt)  # S3: a 409 on completion means upload again from the start
        raise ObjectStoreError(errno.EIO, f"object store write of {path} failed: ConditionalRequestConflict")

    def _multipart(self, path: str, local: Path) -> bool:
        bucket, _ = self._where()
        client, key = self._client(), self._key(path)
        try:
            upload = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        except Exception as exc:  # noqa: BLE001
            raise self._fail("write", path, exc) from None
        try:
            done = []
            with open(local, "rb") as source:
                number = 1
                while chunk := source.read(self.part_bytes):
                    etag = client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number,
                                              Body=chunk)["ETag"]
                    done.append({"ETag": etag, "PartNumber": number})
                    number += 1
            client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload,
                                             MultipartUpload={"Parts": done}, IfNoneMatch="*")
        except Exception as exc:  # noqa: BLE001
            with suppress(Exception):  # else the bucket's lifecycle rule removes what is left
                client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload)
            if _precondition_failed(exc):
                return False
            if _conflict(exc):
                raise _Conflict() from None
            raise self._fail("write", path, exc) from None
        return True

    # ---- moving and claiming ----------------------------------------------------------------------------

    def move(self, source: str, destination: str) -> str:
        """Copy to the first free name (`destination`, then `destination.1`, ...) with a conditional write, then
        delete the source: the source goes only once its copy is whole, and no object is ever overwritten."""
        self._key(destination)
        data = self.read_bytes(source)
        candidate, counter = destination, 1
        while True:
            if self._write_once(candidate, data):
                break
            candidate = f"{destination}.{counter}"
            counter += 1
        bucket, key = self._where()[0], self._key(source)
        try:
            self._client().delete_object(Bucket=bucket, Key=key)
        except Exception as exc:  # noqa: BLE001
            raise self._fail("delete", source, exc) from None
        crashpoint(f"moved {source}")
        return candidate

    def _write_once(self, path: str, data: bytes) -> bool:
        if len(data) <= self.part_bytes:
            return self._put(path, data)
        handle, tmp = tempfile.mkstemp(suffix=".part")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            return self._upload(path, Path(tmp))
        finally:
            os.unlink(tmp)

    def claim(self, path: str, owner: str) -> str:
        """Write `owner` at `path` unless something is there; the owner of the claim either way. Two claimers
        racing: the server accepts exactly one conditional PUT; the other reads the winner's name."""
        if self._put(path, owner.encode()):
            return owner
        return self.read_bytes(path).decode()


class _Body:
    """A streamed object body whose read errors are the store's own (see `S3FileStore.open_read`)."""

    def __init__(self, body, fail):
        self._body, self._fail = body, fail

    def read(self, size: int = -1) -> bytes:
        try:
            return self._body.read(None if size is None or size < 0 else size)
        except Exception as exc:  # noqa: BLE001 - botocore raises several unrelated types; all become OSError
            raise self._fail(exc) from None

    def close(self) -> None:
        self._body.close()
