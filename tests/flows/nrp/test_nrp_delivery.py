"""An NRP file through `run-pending` ends with its acknowledgement and its posting file on the partners' SFTP
servers (a real asyncssh server on loopback), recorded SENT in the delivery register, and the delivery probes."""

from __future__ import annotations

import shutil

import orjson
import pytest
import yaml

from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.definitions import build_definitions
from cmp_pipelines.lib.headless import run_pending_sensors
from tests.support.platform import document, payment

# Whole run-pending passes (every sensor, the NRP job with its expectation suite): about 45 s each on 2 busy cores.
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def sftp_config(tmp_path, server, partners: dict[str, str]) -> None:
    """A copy of config/ whose `partners` (id -> remote folder) send through `server`."""
    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    document_ = yaml.safe_load((config / "partners.yaml").read_text())
    for entry in document_["partners"]:
        if entry["partner_id"] in partners:
            entry["transport"] = server.transport(remote_folder=partners[entry["partner_id"]])
            (server.root / partners[entry["partner_id"]]).mkdir(exist_ok=True)
    (config / "partners.yaml").write_text(yaml.safe_dump(document_))


def test_nrp_file_ends_with_its_acknowledgement_and_posting_file_on_the_sftp_server(platform, instance, tmp_path,
                                                                                   sftp_server, monkeypatch):
    sftp_config(tmp_path, sftp_server, {"PAYPOINT": "to-paypoint", "SALES_LEDGER": "to-ledger"})
    monkeypatch.setenv("CMP_CONFIG_DIR", str(tmp_path / "config"))
    platform.drop("PAYPOINT-20261121-001.json.enc", document([payment("1", "ACC00000001", "10.00")]))
    definitions = build_definitions()
    first = run_pending_sensors(definitions, instance, echo=lambda _: None)
    second = run_pending_sensors(definitions, instance, echo=lambda _: None)  # the daemon's next delivery tick
    runs = [(o.sensor, o.success) for o in first + second]
    assert ("nrp_inbound_files_sensor", True) in runs and ("delivery_sensor", True) in runs, runs

    [ack_name] = sftp_server.files("to-paypoint")
    assert ack_name == "PAYPOINT-20261121-001.ack.json.enc"
    ack = orjson.loads(platform.keyring.decrypt("PAYPOINT", sftp_server.files("to-paypoint")[ack_name]))
    assert ack["header"]["partner_file_id"] == "PAYPOINT-20261121-001"
    assert [(r["record_id"], r["outcome"], r["amount"]) for r in ack["records"]] == [("1", "ACCEPTED", "10.00")]
    [(posting_name, posting_bytes)] = sftp_server.files("to-ledger").items()
    assert posting_bytes == platform.files.read_bytes(f"outbound/ledger/{posting_name}")
    posting = orjson.loads(posting_bytes)
    assert (posting["header"]["record_count"], posting["header"]["total_amount"]) == (1, "-10.00")
    assert platform.query("SELECT partner, document_kind, remote_name, status, attempts FROM delivery_register "
                          "ORDER BY document_kind") == [
        ("SALES_LEDGER", "LEDGER_POSTING", posting_name, "SENT", 1),
        ("PAYPOINT", "NRP_ACKNOWLEDGEMENT", ack_name, "SENT", 1),
    ]
    # nothing more to send: the sensor asks for no run; the delivery probes passed (nothing waiting)
    assert [o for o in run_pending_sensors(definitions, instance, echo=lambda _: None)
            if o.sensor == "delivery_sensor"] == []
    probes = dict(platform.query("SELECT probe_id, tripped FROM probe_results WHERE probe_id LIKE 'deliveries_%' "
                                 "ORDER BY evaluated_at"))
    assert probes == {"deliveries_undelivered": False, "deliveries_unconfirmed": False}


def test_nrp_file_picked_up_from_the_partners_sftp_folder_is_loaded_once(platform, instance, tmp_path,
                                                                        sftp_server, monkeypatch):
    sftp_config(tmp_path, sftp_server, {"PAYPOINT": "to-paypoint"})
    partners_file = tmp_path / "config/partners.yaml"
    document_ = yaml.safe_load(partners_file.read_text())
    [paypoint] = [p for p in document_["partners"] if p["partner_id"] == "PAYPOINT"]
    paypoint["transport"]["pickup"] = [{"feed": "nrp", "remote_folder": "from-paypoint"}]
    partners_file.write_text(yaml.safe_dump(document_))
    monkeypatch.setenv("CMP_CONFIG_DIR", str(tmp_path / "config"))
    (sftp_server.root / "from-paypoint").mkdir()
    data = platform.keyring.encrypt("PAYPOINT", orjson.dumps(document([payment("1", "ACC00000002", "7.25")])))
    (sftp_server.root / "from-paypoint/PAYPOINT-20261121-001.json.enc").write_bytes(data)
    balance = platform.balance("ACC00000002")

    definitions = build_definitions()
    for _ in range(3):
        run_pending_sensors(definitions, instance, echo=lambda _: None)
    assert platform.balance("ACC00000002") == balance - 725
    assert sftp_server.files("from-paypoint") == {}  # removed remotely once safely here
    assert platform.query("SELECT feed, remote_path, local_path, removed_at IS NOT NULL FROM sftp_pickups") == [
        ("nrp", "from-paypoint/PAYPOINT-20261121-001.json.enc", "inbound/nrp/PAYPOINT/PAYPOINT-20261121-001.json.enc",
         True)]
    assert platform.query("SELECT count(*) FROM inbound_files WHERE feed = 'nrp' AND status = 'LOADED'") == [(1,)]
    assert list(sftp_server.files("to-paypoint")) == ["PAYPOINT-20261121-001.ack.json.enc"]
