"""The life of an inbound partner file, shared by every feed: receive, decrypt, refuse duplicates, archive or
quarantine with a reason. Each feed supplies only how to read and load its own content.

A file is identified by its partition key (partner, name and the bytes' hash), so a re-dropped file, a
re-run partition or a resumed run finds what an earlier run recorded instead of loading twice.

On PostgreSQL (a `Mirror`, core/db/mirror.py) `con` is the run's scratch DuckDB: the intake pulls the file's row
and the duplicate candidates before deciding, and pushes its quarantine and archive records; the feed pushes the
load itself, in the transaction that stores its batch (`push_loaded`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import duckdb
import orjson

from cmp_pipelines.core.config import Partner
from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.db.connection import transaction
from cmp_pipelines.core.db.mirror import Mirror
from cmp_pipelines.core.files.errors import FileRejected
from cmp_pipelines.core.files.store import FileStoreLike


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_stem(file_name: str) -> str:
    """What our answers to a partner file are named after: its name without `.json` / `.enc`."""
    return re.sub(r"(\.json)?(\.enc)?$", "", file_name)


def partition_key(partner: str, file_name: str, ciphertext_sha256: str) -> str:
    """One dynamic partition per inbound file: partner, name, and the bytes' identity."""
    return f"{partner}/{file_name}@{ciphertext_sha256[:12]}"


def parse_partition_key(key: str) -> tuple[str, str, str]:
    match = re.fullmatch(r"([^/]+)/(.+)@([0-9a-f]{12})", key, re.DOTALL)
    if not match:
        raise ValueError(f"{key!r} is not an inbound file partition (PARTNER/name@sha12)")
    return match.group(1), match.group(2), match.group(3)


class FileQuarantined(Exception):
    def __init__(self, file_id: str, code: str, message: str, quarantined_path: str):
        super().__init__(f"{file_id} quarantined ({code}): {message}")
        self.file_id, self.code, self.message, self.quarantined_path = file_id, code, message, quarantined_path


@dataclass
class Received:
    file_id: str
    partner: str
    file_name: str
    inbound: str
    ciphertext: bytes
    cipher_sha: str


class Intake:
    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        files: FileStoreLike,
        keyring: PartnerKeyring,
        partners: dict[str, Partner],
        feed: str,
        now: datetime,
        tell_partner: Callable[[str, str, str, FileRejected], None] | None = None,
        mirror: Mirror | None = None,
    ):
        self.con, self.files, self.keyring, self.partners = con, files, keyring, partners
        self.feed, self.now, self.tell_partner, self.mirror = feed, now, tell_partner, mirror

    def load(self, file_id: str, load_new: Callable[[Received], None]) -> str:
        """LOADED when `load_new` loaded the file now, ALREADY_LOADED when an earlier run did.

        `load_new` reads and stores the content and calls `record_loaded` in its own transaction; a
        `FileRejected` it raises quarantines the file.
        """
        partner, file_name, short_sha = parse_partition_key(file_id)
        inbound = f"inbound/{self.feed}/{partner}/{file_name}"
        self.pull_file(file_id)
        row = self.con.execute(
            "SELECT status, batch_id, archived_path, error_code, error FROM inbound_files WHERE file_id = ?",
            [file_id],
        ).fetchone()
        present = self.files.exists(inbound)
        ciphertext = self.files.read_bytes(inbound) if present else None
        cipher_sha = sha256_hex(ciphertext) if ciphertext is not None else None
        if cipher_sha is not None and cipher_sha[:12] != short_sha:
            ciphertext, present = None, False  # another file now bears this name; its own partition handles it
        received = Received(file_id, partner, file_name, inbound, ciphertext, cipher_sha) if present else None
        if row is not None:
            status, batch_id, archived_path, error_code, error = row
            if status == "LOADED":
                if present and archived_path:
                    self.quarantine(received, FileRejected(
                        "DUPLICATE_FILE", f"this exact file was already loaded as batch {batch_id}; nothing posted",
                    ), record=False)
                if present:
                    self.archive(received)
                return "ALREADY_LOADED"
            if not present:
                raise FileQuarantined(file_id, error_code, error, "")
            self.con.execute("DELETE FROM inbound_files WHERE file_id = ?", [file_id])
        if not present:
            raise FileNotFoundError(f"inbound file {inbound} is not there and was never loaded ({file_id})")
        try:
            load_new(received)
        except FileRejected as rejected:
            self.quarantine(received, rejected)
        self.archive(received)
        return "LOADED"

    def decrypt(self, received: Received) -> bytes:
        known = self.partners.get(received.partner)
        if known is None or self.feed not in known.feeds:
            raise FileRejected(
                "UNKNOWN_PARTNER",
                f"partner folder {received.partner!r} is not configured for feed {self.feed!r} in "
                "config/partners.yaml",
                configuration=True,
            )
        return self.keyring.decrypt(received.partner, received.ciphertext)

    def refuse_duplicate(self, received: Received, content_sha: str, header_file_id: str) -> None:
        """The same content, or the partner's own file id, loaded before: nothing is loaded twice."""
        if self.mirror is not None:
            self.mirror.pull("inbound_files", "feed = $1 AND status = 'LOADED' AND (content_sha256 = $2 OR "
                             "(partner = $3 AND header_file_id = $4))",
                             [self.feed, content_sha, received.partner, header_file_id], key=["file_id"])
        duplicate = self.con.execute(
            "SELECT file_id, batch_id FROM inbound_files WHERE feed = ? AND content_sha256 = ? AND status = 'LOADED'",
            [self.feed, content_sha],
        ).fetchone()
        if duplicate:
            raise FileRejected(
                "DUPLICATE_FILE",
                f"the same content was already loaded from {duplicate[0]} as batch {duplicate[1]}; nothing posted",
            )
        resent = self.con.execute(
            "SELECT file_id, batch_id FROM inbound_files WHERE feed = ? AND partner = ? AND header_file_id = ? "
            "AND status = 'LOADED'",
            [self.feed, received.partner, header_file_id],
        ).fetchone()
        if resent:
            raise FileRejected(
                "DUPLICATE_FILE",
                f"header file_id {header_file_id!r} was already loaded from {resent[0]} as batch {resent[1]}; "
                "a corrected file needs a new file_id; nothing posted",
            )

    def record_loaded(self, received: Received, batch_id: str, content_sha: str, header_file_id: str) -> None:
        """Call inside the transaction that stores the batch, so a file is loaded exactly when its batch is."""
        self.con.execute(
            """
            INSERT INTO inbound_files (file_id, feed, partner, file_name, received_path, ciphertext_sha256,
                content_sha256, size_bytes, status, batch_id, received_at, header_file_id)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'LOADED', ?, ?, ?)
            """,
            [received.file_id, self.feed, received.partner, received.file_name, received.inbound,
             received.cipher_sha, content_sha, len(received.ciphertext), batch_id, self.now, header_file_id],
        )

    def push_loaded(self, received: Received, content_sha: str, header_file_id: str, batch_id: str,
                    tables: dict[str, str]) -> None:
        """On PostgreSQL, inside the transaction that stores the batch: under advisory locks on the content and the
        partner's file id (two runs of the same file at once serialise here), check again in PostgreSQL that
        neither was loaded meanwhile, then push `tables` (name -> the batch's rows, as a condition on
        `$batch_id`), the batch row and this file's row, and commit. A duplicate found now is a FileRejected."""
        mirror = self.mirror
        if mirror is None:
            return
        with mirror.transaction():
            mirror.lock(f"{self.feed}:content:{content_sha}", f"{self.feed}:file:{received.partner}:{header_file_id}")
            earlier = mirror.query(
                "SELECT file_id, batch_id FROM inbound_files WHERE feed = $1 AND status = 'LOADED' AND file_id <> $2 "
                "AND (content_sha256 = $3 OR (partner = $4 AND header_file_id = $5)) LIMIT 1",
                [self.feed, received.file_id, content_sha, received.partner, header_file_id]).to_pylist()
            if earlier:
                raise FileRejected(
                    "DUPLICATE_FILE", f"the same content or file id was loaded from {earlier[0]['file_id']} as "
                                      f"batch {earlier[0]['batch_id']} while this file was read; nothing posted")
            for table in tables:  # a batch is written once (its records have no key to refuse a second copy)
                if mirror.query(f"SELECT 1 FROM {table} WHERE batch_id = $1 LIMIT 1", [batch_id]).num_rows:  # noqa: S608
                    raise AssertionError(f"load batch {batch_id} already holds records; a batch is written once")
            mirror.push("batches", "batch_id = $batch_id", {"batch_id": batch_id})
            for table, where in tables.items():
                mirror.push(table, where, {"batch_id": batch_id})
            mirror.upsert("inbound_files", ["file_id"], "file_id = $file_id", {"file_id": received.file_id})

    def pull_file(self, file_id: str) -> None:
        """On PostgreSQL: this file's intake row into the scratch (what every step asks first)."""
        if self.mirror is not None:
            self.mirror.pull("inbound_files", "file_id = $1", [file_id], key=["file_id"])

    def record_problems(self, received: Received, table: str, batch_id: str, configuration: str, data: str,
                        masked: list[str]) -> None:
        """Into job_errors, inside the batch's transaction: each record of `table` whose problem_code is
        `configuration` (a code our configuration lacks) or `data` (a reference we do not hold), and each place a
        card number was found and stored masked."""
        self.con.execute(
            f"""
            INSERT INTO job_errors (job, category, source_ref, detail, raised_at)
            SELECT $feed, CASE problem_code WHEN $configuration THEN 'CONFIGURATION' ELSE 'DATA' END,
                   $file_id || '#' || position, problem_code || ': ' || problem, $now
            FROM {table}
            WHERE batch_id = $batch_id AND problem_code IN ($configuration, $data)
            """,  # noqa: S608 - the table is one of ours, never input
            {"feed": self.feed, "file_id": received.file_id, "now": self.now, "batch_id": batch_id,
             "configuration": configuration, "data": data},
        )
        if masked:
            self.con.executemany(
                "INSERT INTO job_errors (job, category, source_ref, detail, raised_at) VALUES (?, 'DATA', ?, ?, ?)",
                [[self.feed, received.file_id, f"CARD_NUMBER_MASKED: {where} carried a card number; stored masked",
                  self.now] for where in masked])

    def loaded_batch(self, file_id: str) -> tuple[str, str, str | None]:
        """(batch id, partner, archived path) of a loaded file; names the quarantine when it was refused."""
        self.pull_file(file_id)
        row = self.con.execute(
            "SELECT batch_id, partner, archived_path, status, error_code, error FROM inbound_files "
            "WHERE file_id = ?", [file_id]
        ).fetchone()
        if row is None:
            raise LookupError(f"{file_id} has not been loaded: materialise its load asset first")
        batch_id, partner, archived, status, error_code, error = row
        if status != "LOADED":
            raise FileQuarantined(file_id, error_code, error, "")
        return batch_id, partner, archived

    def archive(self, received: Received) -> None:
        folder = f"archive/{self.feed}/{received.partner}/{self.now:%Y-%m-%d}"
        destination = self.files.move(received.inbound, f"{folder}/{received.file_name}")
        self.con.execute(
            "UPDATE inbound_files SET archived_path = ?, completed_at = ? WHERE file_id = ?",
            [destination, self.now, received.file_id],
        )
        if self.mirror is not None:
            with self.mirror.transaction():
                self.mirror.upsert("inbound_files", ["file_id"], "file_id = $file_id", {"file_id": received.file_id})

    def quarantine(self, received: Received, rejected: FileRejected, record: bool = True) -> None:
        """Move the file aside with a `.error.json` saying why, tell the partner, and raise FileQuarantined."""
        partner, file_name = received.partner, received.file_name
        destination = self.files.move(received.inbound, f"quarantine/{self.feed}/{partner}/{file_name}")
        report = {
            "file": file_name,
            "feed": self.feed,
            "partner": partner,
            "file_id": received.file_id,
            "error_code": rejected.code,
            "error": rejected.message,
            "configuration_error": rejected.configuration,
            "received_path": received.inbound,
            "quarantined_path": destination,
            "ciphertext_sha256": received.cipher_sha,
            "detected_at": self.now.isoformat(),
        }
        try:
            self.files.write_bytes(f"{destination}.error.json", orjson.dumps(report, option=orjson.OPT_INDENT_2))
        except OSError as exc:  # the file is safe in quarantine: the store's row keeps the reason instead
            rejected = FileRejected(rejected.code, f"{rejected.message} (the quarantine report could not be "
                                                   f"written ({exc.strerror or exc}); this row is the record)",
                                    configuration=rejected.configuration)
        if self.tell_partner is not None:
            self.tell_partner(partner, file_name, received.file_id, rejected)
        with transaction(self.con):
            if record:
                self.con.execute(
                    """
                    INSERT INTO inbound_files (file_id, feed, partner, file_name, received_path, ciphertext_sha256,
                        size_bytes, status, quarantined_path, error_code, error, received_at, completed_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, 'QUARANTINED', ?, ?, ?, ?, ?)
                    """,
                    [received.file_id, self.feed, partner, file_name, received.inbound, received.cipher_sha or "",
                     len(received.ciphertext or b""), destination, rejected.code, rejected.message, self.now,
                     self.now],
                )
            if rejected.configuration:
                self.con.execute(
                    "INSERT INTO job_errors (job, category, source_ref, detail, raised_at) "
                    "VALUES (?, 'CONFIGURATION', ?, ?, ?)",
                    [self.feed, received.file_id, f"{rejected.code}: {rejected.message}", self.now],
                )
            if self.mirror is not None:
                with self.mirror.transaction():
                    if record:
                        self.mirror.upsert("inbound_files", ["file_id"], "file_id = $file_id",
                                           {"file_id": received.file_id})
                    self.mirror.push("job_errors", "job = $feed AND source_ref = $file_id AND raised_at = $now",
                                     {"feed": self.feed, "file_id": received.file_id, "now": self.now})
                    self.mirror.push_deliveries(self.now)
        raise FileQuarantined(received.file_id, rejected.code, rejected.message, destination)
