"""Delivery and SFTP pickup when the documents live in the object store: a document published into the bucket
reaches the partner (a relative folder, which is then a prefix of the bucket, an absolute folder, SFTP) streamed
from the bucket, and a file picked up from a partner's SFTP folder lands in the bucket's inbound prefix, never in
the local data folder of whichever machine ran the delivery or the pickup."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from cmp_pipelines.core import delivery
from cmp_pipelines.core.config import LocalTransport, Partner, SftpTransport
from cmp_pipelines.core.db.connection import connect
from cmp_pipelines.core.transports import deliver_pending, pickup_inbound, send_to_store
from cmp_pipelines.lib.resources.file_store import document_source, object_store
from cmp_pipelines.lib.resources.s3_store import S3FileStore

T0 = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
DOC = b'{"header": {"batch_id": "NRPP-1"}, "postings": []}'


def test_a_document_in_the_bucket_is_delivered_to_a_folder_and_over_sftp(s3_bucket, sftp_server, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setenv("CMP_FILES_URL", s3_bucket.url)
    store = object_store()
    assert isinstance(store, S3FileStore)
    store.write_bytes("outbound/ledger/NRPP-1.json", DOC)
    store.write_bytes("outbound/card_payments/CARDPAY/RCX-1.json.enc", b"extract" * 1000)
    with connect(tmp_path / "cmp.duckdb") as con:
        delivery.enqueue(con, store, "LEDGER_POSTING", "outbound/ledger/NRPP-1.json", now=T0)
        delivery.enqueue(con, store, "CARD_EXTRACT", "outbound/card_payments/CARDPAY/RCX-1.json.enc", now=T0)
        assert con.execute("SELECT sha256 FROM delivery_register ORDER BY delivery_id").fetchall()[0][0] == \
            hashlib.sha256(DOC).hexdigest()
    share = tmp_path / "share"  # an absolute folder: a share every machine mounts
    partners = {"SALES_LEDGER": Partner("SALES_LEDGER", "ledger", ()),  # no transport: delivered/SALES_LEDGER
                "CARDPAY": Partner("CARDPAY", "cards", (),
                                   transport=SftpTransport.model_validate(sftp_server.transport()))}

    report = deliver_pending(lambda: connect(tmp_path / "cmp.duckdb"), partners, tmp_path, tmp_path / "keys",
                             source=document_source(), now=lambda: T0)

    assert sorted(d.remote_name for d in report.sent) == ["NRPP-1.json", "RCX-1.json.enc"], report.failed
    assert (tmp_path / "delivered/SALES_LEDGER/NRPP-1.json").read_bytes() == DOC  # without `store`: as on one machine
    assert sftp_server.files() == {"RCX-1.json.enc": b"extract" * 1000}
    assert not (tmp_path / "outbound").exists()

    # with the store given (the delivery job and `deliveries retry --now` give it when CMP_FILES_URL is set), a
    # relative folder is a prefix of the bucket and an absolute one stays a folder
    store.write_bytes("outbound/ledger/NRPP-2.json", DOC + b" ")
    store.write_bytes("outbound/ledger/NRPP-3.json", b"three")
    with connect(tmp_path / "cmp.duckdb") as con:
        for name in ("NRPP-2.json", "NRPP-3.json"):
            delivery.enqueue(con, store, "LEDGER_POSTING", f"outbound/ledger/{name}", now=T0)
        delivery.enqueue(con, store, "CARD_EXTRACT", "outbound/card_payments/CARDPAY/RCX-1.json.enc",
                         partner="LOCKBOX", now=T0)
    store.write_bytes("delivered/SALES_LEDGER/NRPP-3.json", b"another document of that name")
    partners["LOCKBOX"] = Partner("LOCKBOX", "lockbox", (), transport=LocalTransport(type="local", folder=str(share)))
    machine = tmp_path / "worker"

    report = deliver_pending(lambda: connect(tmp_path / "cmp.duckdb"), partners, machine, tmp_path / "keys",
                             store=store, now=lambda: T0)

    assert [d.remote_name for d in report.sent] == ["NRPP-2.json", "RCX-1.json.enc"]
    [(refused, why)] = report.failed
    assert refused.remote_name == "NRPP-3.json"
    assert why == ("the object store's delivered/SALES_LEDGER/NRPP-3.json already exists with other content "
                   "(29 bytes); refusing to overwrite it")
    assert store.read_bytes("delivered/SALES_LEDGER/NRPP-2.json") == DOC + b" "
    assert store.read_bytes("delivered/SALES_LEDGER/NRPP-3.json") == b"another document of that name"
    assert (share / "RCX-1.json.enc").read_bytes() == b"extract" * 1000
    assert not machine.exists(), "nothing on the delivering machine's own disk"
    with connect(tmp_path / "cmp.duckdb") as con:
        assert con.execute("SELECT remote_name, status, transport FROM delivery_register WHERE remote_name IN "
                           "('NRPP-2.json', 'NRPP-3.json') ORDER BY 1").fetchall() == [
            ("NRPP-2.json", "SENT", "local"), ("NRPP-3.json", "FAILED", "local")]
    # the document already there with its own bytes (a deliverer that died after publishing): sent, not again
    [item] = send_to_store(LocalTransport(type="local", folder="delivered/SALES_LEDGER/"), store,
                           [d for d in report.sent if d.remote_name == "NRPP-2.json"], store.open_read)
    assert item.ok and item.detail == ("already at the object store's delivered/SALES_LEDGER/NRPP-2.json; "
                                       "not sent again")


def test_a_file_picked_up_over_sftp_lands_in_the_bucket(s3_bucket, sftp_server, tmp_path):
    store = S3FileStore(url=s3_bucket.url)
    outbox = sftp_server.root / "reports"
    outbox.mkdir()
    (outbox / "ARUDD-1.xml.enc").write_bytes(b"report one")
    store.write_bytes("inbound/arudd/BACSBUREAU/ARUDD-1.xml.enc", b"an earlier file of that name")
    partner = Partner("BACSBUREAU", "bureau", ("arudd",), transport=SftpTransport.model_validate(
        sftp_server.transport(pickup=[{"feed": "arudd", "remote_folder": "reports"}])))

    with connect(tmp_path / "cmp.duckdb") as con:
        [outcome] = pickup_inbound(con, partner, tmp_path, tmp_path / "keys", T0, store=store)
        again = pickup_inbound(con, partner, tmp_path, tmp_path / "keys", T0, store=store)

    assert outcome.error is None and outcome.removed
    assert outcome.local_path.startswith("inbound/arudd/BACSBUREAU/ARUDD-1.")
    assert outcome.local_path != "inbound/arudd/BACSBUREAU/ARUDD-1.xml.enc", "the earlier file is not overwritten"
    assert store.read_bytes(outcome.local_path) == b"report one"
    assert outcome.sha256 == hashlib.sha256(b"report one").hexdigest()
    assert store.read_bytes("inbound/arudd/BACSBUREAU/ARUDD-1.xml.enc") == b"an earlier file of that name"
    assert again == [] and list(outbox.iterdir()) == []
    assert not (tmp_path / "inbound").exists()
