"""Delivery and SFTP pickup when the documents live in the object store: a document published into the bucket
reaches the partner (local folder and SFTP) streamed from the bucket, and a file picked up from a partner's SFTP
folder lands in the bucket's inbound prefix, never in the local data folder."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from cmp_pipelines.core import delivery
from cmp_pipelines.core.config import Partner, SftpTransport
from cmp_pipelines.core.db.connection import connect
from cmp_pipelines.core.transports import deliver_pending, pickup_inbound
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
    partners = {"SALES_LEDGER": Partner("SALES_LEDGER", "ledger", ()),  # no transport: delivered/SALES_LEDGER
                "CARDPAY": Partner("CARDPAY", "cards", (),
                                   transport=SftpTransport.model_validate(sftp_server.transport()))}

    report = deliver_pending(lambda: connect(tmp_path / "cmp.duckdb"), partners, tmp_path, tmp_path / "keys",
                             source=document_source(), now=lambda: T0)

    assert sorted(d.remote_name for d in report.sent) == ["NRPP-1.json", "RCX-1.json.enc"], report.failed
    assert (tmp_path / "delivered/SALES_LEDGER/NRPP-1.json").read_bytes() == DOC
    assert sftp_server.files() == {"RCX-1.json.enc": b"extract" * 1000}
    assert not (tmp_path / "outbound").exists()


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
