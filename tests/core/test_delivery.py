"""The delivery register and the transports, against a real SFTP server on loopback (tests/support/sftp.py)."""

from __future__ import annotations

import hashlib
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest

from cmp_pipelines.core import delivery
from cmp_pipelines.core.config import LocalTransport, Partner, SftpTransport
from cmp_pipelines.core.db.connection import connect
from cmp_pipelines.core.transports import deliver_pending, pickup_inbound
from cmp_pipelines.lib.resources.file_store import LocalFileStore

T0 = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


class Store:
    def __init__(self, root: Path):
        self.root = root
        self.files = LocalFileStore(base_dir=str(root))
        self.keys = root / "keys"
        self.now = T0

    def connect(self):
        return connect(self.root / "cmp.duckdb")

    def publish(self, path: str, data: bytes, kind: str = "LEDGER_POSTING", partner: str | None = None) -> None:
        self.files.write_bytes(path, data)
        with self.connect() as con:
            delivery.enqueue(con, self.files, kind, path, partner=partner, now=self.now)

    def deliver(self, partners: dict[str, Partner], **options) -> delivery.DeliveryReport:
        return deliver_pending(self.connect, partners, self.root, self.keys, now=lambda: self.now, **options)

    def rows(self) -> list[tuple]:
        with self.connect() as con:
            return con.execute("SELECT remote_name, partner, status, attempts, last_error FROM delivery_register "
                               "ORDER BY delivery_id").fetchall()


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path)


def sftp_partner(server, partner_id: str = "SALES_LEDGER", **extra) -> dict[str, Partner]:
    transport = SftpTransport.model_validate(server.transport(**extra))
    return {partner_id: Partner(partner_id, partner_id, (), transport=transport)}


DOC = b'{"header": {"batch_id": "NRPP-1"}, "postings": []}'


def test_enqueue_twice_is_one_row_with_the_checksum_and_the_partner_from_the_folder(store):
    store.publish("outbound/ledger/NRPP-1.json", DOC)
    store.publish("outbound/card_payments/CARDPAY/RCX-1.json.enc", b"x" * 10, kind="CARD_EXTRACT")
    with store.connect() as con:
        delivery.enqueue(con, store.files, "LEDGER_POSTING", "outbound/ledger/NRPP-1.json")
        rows = con.execute("SELECT partner, remote_name, sha256, size_bytes, status FROM delivery_register "
                           "ORDER BY delivery_id").fetchall()
    assert rows == [
        ("SALES_LEDGER", "NRPP-1.json", hashlib.sha256(DOC).hexdigest(), len(DOC), "PENDING"),
        ("CARDPAY", "RCX-1.json.enc", hashlib.sha256(b"x" * 10).hexdigest(), 10, "PENDING"),
    ]
    with store.connect() as con, pytest.raises(ValueError, match="unknown document kind 'MEMO'"):
        delivery.enqueue(con, store.files, "MEMO", "outbound/ledger/NRPP-1.json")


def test_local_transport_copies_under_a_temporary_name_and_never_overwrites(store):
    store.publish("outbound/ledger/NRPP-1.json", DOC)
    partners = {"SALES_LEDGER": Partner("SALES_LEDGER", "ledger", ())}  # no transport: delivered/SALES_LEDGER
    report = store.deliver(partners)
    assert [d.remote_name for d in report.sent] == ["NRPP-1.json"]
    assert (store.root / "delivered/SALES_LEDGER/NRPP-1.json").read_bytes() == DOC
    assert os.listdir(store.root / "delivered/SALES_LEDGER") == ["NRPP-1.json"]
    assert store.rows() == [("NRPP-1.json", "SALES_LEDGER", "SENT", 1, None)]
    # a different document under the same name is refused, the delivered one kept
    other = LocalTransport(type="local", folder=str(store.root / "delivered/SALES_LEDGER"))
    store.publish("outbound/ledger/again/NRPP-1.json", b"other", partner="SALES_LEDGER")
    store.deliver({"SALES_LEDGER": Partner("SALES_LEDGER", "ledger", (), transport=other)})
    assert store.rows()[1][2:4] == ("FAILED", 1)
    assert "already exists with other content (" in store.rows()[1][4]
    assert (store.root / "delivered/SALES_LEDGER/NRPP-1.json").read_bytes() == DOC


def test_sftp_upload_appears_under_its_final_name_only_after_the_rename(store, sftp_server):
    store.publish("outbound/ledger/NRPP-1.json", DOC)
    report = store.deliver(sftp_partner(sftp_server))
    assert [d.remote_name for d in report.sent] == ["NRPP-1.json"]
    assert sftp_server.files() == {"NRPP-1.json": DOC}
    assert sftp_server.uploads_opened == ["upload/NRPP-1.json.part"]  # written only under the temporary name
    assert store.rows() == [("NRPP-1.json", "SALES_LEDGER", "SENT", 1, None)]
    assert store.deliver(sftp_partner(sftp_server)).sent == []  # nothing due any more


def test_connection_dropped_mid_upload_fails_then_one_retry_sends_it_whole(store, sftp_server):
    big = os.urandom(700_000)
    store.publish("outbound/ledger/DDP-20261202.json", big)
    sftp_server.drop_after = 300_000
    report = store.deliver(sftp_partner(sftp_server))
    assert report.sent == [] and sftp_server.drops == 1
    name, _, status, attempts, error = store.rows()[0]
    assert (status, attempts) == ("FAILED", 1)
    assert error.startswith("SFTP cmp@127.0.0.1:") and "connection lost" in error.lower()
    assert "DDP-20261202.json" not in sftp_server.files()  # never half a file under the final name
    assert store.deliver(sftp_partner(sftp_server)).sent == []  # backoff: not due yet
    store.now += delivery.backoff(1)
    assert [d.remote_name for d in store.deliver(sftp_partner(sftp_server)).sent] == ["DDP-20261202.json"]
    assert sftp_server.files() == {"DDP-20261202.json": big}
    assert store.rows()[0][2:4] == ("SENT", 2)


def test_a_wrong_host_key_is_refused_and_the_document_fails(store, sftp_server):
    store.publish("outbound/ledger/NRPP-1.json", DOC)
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    store.deliver(sftp_partner(sftp_server, host_key=impostor))
    _, _, status, attempts, error = store.rows()[0]
    assert (status, attempts) == ("FAILED", 1)
    assert error == (f"SFTP cmp@127.0.0.1:{sftp_server.port}: the server's host key does not match the pinned key; "
                     "refused (connection not trusted)")
    assert sftp_server.files() == {} and sftp_server.uploads_opened == []


def test_permission_denied_fails_with_the_reason_and_no_secret_then_is_retried(store, sftp_server):
    store.publish("outbound/ledger/NRPP-1.json", DOC)
    sftp_server.denied.add("upload")
    store.deliver(sftp_partner(sftp_server))
    _, _, status, attempts, error = store.rows()[0]
    assert (status, attempts) == ("FAILED", 1)
    assert error == f"SFTP cmp@127.0.0.1:{sftp_server.port}: Permission denied (SFTP code 3)"
    key_text = sftp_server.client_key.read_text()
    assert key_text.splitlines()[1] not in error and "PRIVATE" not in error
    sftp_server.denied.clear()
    store.now += delivery.backoff(1)
    store.deliver(sftp_partner(sftp_server))
    assert store.rows()[0][2:4] == ("SENT", 2)
    assert sftp_server.files() == {"NRPP-1.json": DOC}


def test_a_retry_finding_the_document_already_there_does_not_send_it_again(store, sftp_server):
    store.publish("outbound/ledger/NRPP-1.json", DOC)
    store.publish("outbound/ledger/NRPP-2.json", b"ours")
    (sftp_server.root / "upload/NRPP-1.json").write_bytes(DOC)  # the rename went through, the result was lost
    (sftp_server.root / "upload/NRPP-2.json").write_bytes(b"else")  # same size, other bytes
    store.deliver(sftp_partner(sftp_server))
    rows = store.rows()
    assert rows[0][2] == "SENT" and sftp_server.uploads_opened == []
    assert rows[1][2] == "FAILED" and "already exists with other content (4 bytes); refusing to overwrite" in rows[1][4]
    assert sftp_server.files()["NRPP-2.json"] == b"else"


def test_retries_stop_at_max_attempts_until_an_operator_retries(store, tmp_path):
    store.publish("outbound/ledger/NRPP-1.json", DOC)
    for _ in range(3):
        store.deliver({}, max_attempts=3)  # no such partner configured
        store.now += timedelta(hours=3)
    _, _, status, attempts, error = store.rows()[0]
    assert (status, attempts) == ("FAILED", 3)
    assert error == "partner SALES_LEDGER is not in partners.yaml; nothing to send it through"
    with store.connect() as con:
        assert delivery.due_state(con, store.now, max_attempts=3) is None
        assert delivery.retry(con, None, store.now) == 1
        assert delivery.due_state(con, store.now, max_attempts=3) is not None
    store.deliver({"SALES_LEDGER": Partner("SALES_LEDGER", "ledger", ())}, max_attempts=3)
    assert store.rows()[0][2:4] == ("SENT", 1)


def test_backoff_doubles_and_is_capped():
    assert [delivery.backoff(n).total_seconds() for n in (1, 2, 3, 4)] == [60, 120, 240, 480]
    assert delivery.backoff(30) == delivery.MAX_BACKOFF


def test_two_deliverers_at_once_send_each_document_once(store, sftp_server):
    documents = {f"NRPP-{n}.json": os.urandom(50_000) for n in range(6)}
    for name, data in documents.items():
        store.publish(f"outbound/ledger/{name}", data)
    partners = sftp_partner(sftp_server)
    reports: list = []
    start = threading.Barrier(2)

    def run():
        start.wait()
        reports.append(store.deliver(partners))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent = sorted(d.remote_name for r in reports for d in r.sent)
    assert sent == sorted(documents)
    assert sorted(sftp_server.uploads_opened) == sorted(f"upload/{n}.part" for n in documents)
    assert sftp_server.files() == documents
    assert {row[2] for row in store.rows()} == {"SENT"}


def test_pickup_downloads_each_file_once_and_removes_it(store, sftp_server):
    outbox = sftp_server.root / "reports"
    outbox.mkdir()
    (outbox / "ARUDD-1.xml.enc").write_bytes(b"report one")
    (outbox / "ARUDD-2.xml.enc.part").write_bytes(b"still uploading")
    partner = Partner("BACSBUREAU", "bureau", ("arudd",), transport=SftpTransport.model_validate(
        sftp_server.transport(pickup=[{"feed": "arudd", "remote_folder": "reports"}])))
    with store.connect() as con:
        outcomes = pickup_inbound(con, partner, store.root, store.keys, T0)
    assert [(o.remote_path, o.local_path, o.removed, o.error) for o in outcomes] == [
        ("reports/ARUDD-1.xml.enc", "inbound/arudd/BACSBUREAU/ARUDD-1.xml.enc", True, None)]
    assert (store.root / "inbound/arudd/BACSBUREAU/ARUDD-1.xml.enc").read_bytes() == b"report one"
    assert os.listdir(store.root / "inbound/arudd/BACSBUREAU") == ["ARUDD-1.xml.enc"]
    assert sorted(os.listdir(outbox)) == ["ARUDD-2.xml.enc.part"]
    with store.connect() as con:
        assert pickup_inbound(con, partner, store.root, store.keys, T0) == []


def test_pickup_whose_removal_failed_removes_it_next_time_without_taking_it_again(store, sftp_server):
    outbox = sftp_server.root / "reports"
    outbox.mkdir()
    (outbox / "ADDACS-1.xml.enc").write_bytes(b"advices")
    sftp_server.denied.add("reports")  # the partner's folder refuses our rename into processed/
    partner = Partner("BACSBUREAU", "bureau", ("addacs",), transport=SftpTransport.model_validate(
        sftp_server.transport(pickup=[{"feed": "addacs", "remote_folder": "reports", "after_download": "move"}])))
    with store.connect() as con:
        first = pickup_inbound(con, partner, store.root, store.keys, T0)
    assert first[0].error.endswith("Permission denied (SFTP code 3)")
    assert (store.root / "inbound/addacs/BACSBUREAU/ADDACS-1.xml.enc").read_bytes() == b"advices"
    (store.root / "inbound/addacs/BACSBUREAU/ADDACS-1.xml.enc").unlink()  # the inbound flow took it
    sftp_server.denied.clear()
    with store.connect() as con:
        second = pickup_inbound(con, partner, store.root, store.keys, T0)
        taken = con.execute("SELECT count(*), count(removed_at) FROM sftp_pickups").fetchone()
    assert [(o.local_path, o.removed) for o in second] == [(None, True)]  # removed, not downloaded again
    assert not (store.root / "inbound/addacs/BACSBUREAU/ADDACS-1.xml.enc").exists()
    assert (outbox / "processed/ADDACS-1.xml.enc").read_bytes() == b"advices"
    assert taken == (1, 1)
