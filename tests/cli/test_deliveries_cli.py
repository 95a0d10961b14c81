"""`cmp-pipelines deliveries list|retry`: what an operator sees of the delivery register, and a retry."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from click.testing import CliRunner

from cmp_pipelines.cli import main
from cmp_pipelines.core import delivery
from cmp_pipelines.core.db.connection import connect
from cmp_pipelines.core.transports import deliver_pending
from cmp_pipelines.lib.resources.file_store import LocalFileStore


def test_list_shows_the_failure_and_retry_now_sends_it(tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("CMP_DATA_DIR", str(data))
    monkeypatch.delenv("CMP_CONFIG_DIR", raising=False)
    files = LocalFileStore(base_dir=str(data))
    files.write_bytes("outbound/ledger/NRPP-abc.json", b'{"header": {}, "postings": []}')
    with connect(data / "cmp.duckdb") as con:
        delivery.enqueue(con, files, "LEDGER_POSTING", "outbound/ledger/NRPP-abc.json", reference="NRPP-abc")
    deliver_pending(lambda: connect(data / "cmp.duckdb"), {}, data, data / "keys")  # SALES_LEDGER unknown: FAILED

    listed = CliRunner().invoke(main, ["deliveries", "list", "--status", "FAILED"])
    assert listed.exit_code == 0, listed.output
    assert "FAILED    SALES_LEDGER   LEDGER_POSTING       NRPP-abc.json  attempts=1" in listed.output
    assert "last error: partner SALES_LEDGER is not in partners.yaml; nothing to send it through" in listed.output

    refused = CliRunner().invoke(main, ["deliveries", "retry"])
    assert refused.exit_code == 1 and "name the documents to retry" in refused.output
    retried = CliRunner().invoke(main, ["deliveries", "retry", "--all", "--now"])
    assert retried.exit_code == 0, retried.output
    assert retried.output.splitlines() == ["1 document(s) due again", "sent    SALES_LEDGER NRPP-abc.json"]
    assert (data / "delivered/SALES_LEDGER/NRPP-abc.json").read_bytes() == b'{"header": {}, "postings": []}'
    [row] = json.loads(CliRunner().invoke(main, ["deliveries", "list", "--json"]).output)
    assert (row["status"], row["attempts"], row["last_error"]) == ("SENT", 1, None)
    assert row["sent_at"] <= datetime.now(UTC).isoformat()
