"""The hardware-order flows on PostgreSQL: two runs at once over the same orders and devices decide once (the
`hw:state` lock, defs/hardware_orders/pg.py), and the same scenario gives the same files, byte for byte, and the
same rows on both stores."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

import pytest

from cmp_pipelines.core.config import load_partners
from cmp_pipelines.core.db.mirror import mirrored
from cmp_pipelines.defs.hardware_orders.dispatch import WarehouseDispatch
from cmp_pipelines.defs.hardware_orders.fraud_check import RuleBasedFraudCheck
from cmp_pipelines.defs.hardware_orders.orders import Delivery
from cmp_pipelines.defs.hardware_orders.sales_orders import SalesOrderRequests
from tests.support.hardware import CONFIG, Hardware, _hardware, imei, shipped
from tests.support.platform import NOW

pytestmark = pytest.mark.postgres


def at_once(*jobs: Callable[[], object]) -> list:
    """Run `jobs` in threads released together (each on its own scratch and PostgreSQL connection); returns their
    results, raising the first error any of them met (a deadlock among them)."""
    barrier = threading.Barrier(len(jobs))
    results: list = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(index: int, job) -> None:
        try:
            barrier.wait()
            results[index] = job()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def request_run(hardware: Hardware, batch_id: str):
    def job():
        with mirrored(hardware.platform.url) as mirror:
            flow = SalesOrderRequests(mirror.con, hardware.platform.files, hardware.platform.keyring,
                                      hardware.config, RuleBasedFraudCheck(), NOW, mirror)
            return flow.send(flow.check_fraud(flow.claim(batch_id)))
    return job


def dispatch_run(hardware: Hardware, key: str):
    def job():
        with mirrored(hardware.platform.url) as mirror:
            flow = WarehouseDispatch(mirror.con, hardware.platform.files, hardware.platform.keyring,
                                     load_partners(CONFIG), hardware.config, NOW, mirror)
            load = flow.load(key)
            result = flow.apply(load)
            flow.write_posting_file(result)
            flow.write_report(load, result)
            return load, result
    return job


@pytest.fixture
def pg_hardware(pg_platform) -> Hardware:
    return _hardware(pg_platform)


def test_two_runs_at_once_claim_send_allocate_and_bill_once(pg_hardware):
    hardware = pg_hardware
    single = hardware.order("ACC00000011", [("HS-ACME-X1", 1)])
    double = hardware.order("ACC00000012", [("HS-ACME-X1", 2)], billing="NEXT_INVOICE")
    refused = hardware.order("ACC00000013", [("PR-CASE-X1", 1)], delivery=Delivery("Sam", "9 Low Road", None,
                                                                                    "Hull", None))
    [[up_to]] = hardware.platform.query("SELECT max(generation_seq) FROM hw_orders")
    batch_id = f"SOR-{up_to:08d}"

    first, second = at_once(request_run(hardware, batch_id), request_run(hardware, batch_id))

    assert (first.status, second.status) == ("SENT", "SENT")
    assert first.sent_count == second.sent_count == 2 and first.fraud_failed == second.fraud_failed == 1
    assert hardware.platform.query(
        "SELECT order_id, new_status, count(*) FROM hw_order_history WHERE old_status = 'AWAITING_GENERATION' "
        "GROUP BY 1, 2 ORDER BY 1") == [(single, "AWAITING_DISPATCH", 1), (double, "AWAITING_DISPATCH", 1),
                                        (refused, "ERROR", 1)]
    assert hardware.platform.query("SELECT count(*) FROM hw_request_orders") == [(3,)]
    assert hardware.platform.query("SELECT count(*) FROM hw_fraud_checks") == [(3,)]
    assert hardware.platform.query("SELECT event_code, source_ref FROM workflow_events") == [
        ("FRAUD_CHECK_FAILED", refused)]
    assert hardware.platform.query("SELECT count(*) FROM delivery_register WHERE document_kind = "
                                   "'SALES_ORDER_REQUEST'") == [(1,)]

    # two warehouse files at once: both ship the single order's one unit (the second finds it complete), and the
    # same device to the double order (allocated once)
    north = hardware.drop_dispatch("WH_NORTH", "n1.csv.enc", [shipped(single, 1, "HS-ACME-X1", imei(1)),
                                                              shipped(double, 1, "HS-ACME-X1", imei(5))])
    again = hardware.drop_dispatch("WH_NORTH", "n2.csv.enc", [shipped(single, 1, "HS-ACME-X1", imei(2)),
                                                              shipped(double, 1, "HS-ACME-X1", imei(5), courier="X")])
    (load_a, result_a), (load_b, result_b) = at_once(dispatch_run(hardware, north), dispatch_run(hardware, again))

    outcomes = sorted(hardware.platform.query(
        "SELECT order_id, outcome, coalesce(problem_code, '') FROM hw_dispatch_records ORDER BY 1, 2, 3"))
    assert outcomes == sorted([(double, "DISPATCHED", ""), (double, "REJECTED", "DUPLICATE_DEVICE"),
                               (single, "DISPATCHED", ""), (single, "REJECTED", "ORDER_NOT_AWAITING_DISPATCH")])
    assert hardware.platform.query("SELECT device_id, order_id FROM hw_devices ORDER BY 1") in (
        [(imei(1), single), (imei(5), double)], [(imei(2), single), (imei(5), double)])
    assert hardware.platform.query("SELECT order_id, new_status, count(*) FROM hw_order_history "
                                   "WHERE old_status = 'AWAITING_DISPATCH' GROUP BY 1, 2") == [(single, "COMPLETE", 1)]
    assert hardware.status(double) == "AWAITING_DISPATCH"  # one of its two units shipped
    assert hardware.platform.query("SELECT account_number, amount_minor FROM ledger_postings "
                                   "WHERE kind = 'HARDWARE_CHARGE'") == [("ACC00000011", 49900)]
    assert result_a.ledger_charges + result_b.ledger_charges == 1
    assert hardware.platform.query("SELECT count(*) FROM hw_pending_charges") == [(0,)]
    assert {load_a.status, load_b.status} == {"LOADED"}


def scenario(hardware: Hardware) -> None:
    """Every hardware job once: a fraud refusal, both billing choices, a dispatch file with good and bad rows, an
    enrolment day and the manufacturer's answer."""
    from tests.support.hardware import answer, failed

    immediate = hardware.order("ACC00000011", [("HS-ACME-X1", 1), ("PR-CASE-X1", 2)], enrolment=True)
    later = hardware.order("ACC00000012", [("HS-ORBIT-5", 1)], billing="NEXT_INVOICE", enrolment=True)
    hardware.order("ACC00000013", [("PR-CASE-X1", 1)], delivery=Delivery("Sam", "9 Low Road", None, "Hull", None))
    hardware.request()
    hardware.dispatch(hardware.drop_dispatch("WH_NORTH", "n.csv.enc", [
        shipped(immediate, 1, "HS-ACME-X1", imei(1)), shipped(immediate, 2, "PR-CASE-X1", "CASE-1"),
        failed(immediate, 2, "PR-CASE-X1", "Out of stock"), shipped("HO09999999", 1, "HS-ACME-X1", imei(9))]))
    hardware.dispatch(hardware.drop_dispatch("WH_SOUTH", "s.csv.enc", [shipped(later, 1, "HS-ORBIT-5", imei(4))]))
    batch = hardware.enrolment_day(NOW.date())
    [request] = hardware.read_enrolment("ACME_MOBILE", batch.batch_id)["requests"]
    hardware.process_response(hardware.drop_response("ACME_MOBILE", "a.json.enc", [
        answer("1", request["request_id"], imei(1), "FAILED", "IMEI not registered"),
        answer("2", "DER-X-9", imei(2), "ENROLLED")]))


def documents(hardware: Hardware) -> dict[str, bytes]:
    """Every file the jobs wrote, encrypted ones decrypted (their ciphertexts differ by nonce and key, and so do the
    partition keys naming an inbound file by its ciphertext's hash)."""
    files = hardware.platform.files
    written = {}
    for folder in ("outbound", "converted"):
        for entry in files.list_files(folder):
            data = files.read_bytes(entry.path)
            if entry.path.endswith(".enc"):
                data = hardware.platform.keyring.decrypt(entry.path.split("/")[2], data)
            written[entry.path] = re.sub(rb"@[0-9a-f]{12}", b"@<ciphertext>", data)  # a partition key
    return written


TABLES = {  # what the jobs write, without the ids each store's own sequences draw
    "hw_orders": "*", "hw_order_lines": "*", "hw_request_orders": "*", "hw_fraud_checks": "*",
    "hw_dispatch_records": "*", "hw_devices": "*", "hw_enrolment_requests": "*", "hw_enrolment_responses": "*",
    "hw_pending_charges": "*", "hw_products": "*", "hw_settings": "*", "hw_deny_list": "*",
    "hw_order_history": "order_id, old_status, new_status, cause, changed_at", "job_errors": "job, category, detail",
    "batches": "batch_id, kind, feed, partner, parent_batch_id, status, record_count, accepted_count, "
               "rejected_count, total_minor, output_path, created_at, completed_at",
    "inbound_files": "feed, partner, file_name, content_sha256, status, batch_id, header_file_id, archived_path",
    "ledger_postings": "idempotency_key, account_number, invoice_number, kind, amount_minor, currency, batch_id, "
                       "source_ref, effective_at",
    "workflow_events": "event_type, event_code, account_number, source_ref, detail, raised_at",
    "delivery_register": "partner, document_kind, reference, remote_name, size_bytes, status",  # sha: of ciphertext
}


def test_the_same_files_and_rows_on_both_stores(pg_platform, platform_template, tmp_path):
    """The scenario on PostgreSQL and on an embedded copy of the same seeded store: the same documents byte for
    byte (the request and enrolment files decrypted) and the same rows in every table the jobs write."""
    import shutil

    from cmp_pipelines.core.crypto.keyring import PartnerKeyring
    from cmp_pipelines.lib.resources.file_store import LocalFileStore
    from tests.support.platform import Platform

    root = tmp_path / "embedded"
    shutil.copytree(platform_template, root)
    embedded = _hardware(Platform(root, LocalFileStore(base_dir=str(root)), PartnerKeyring(root / "keys")))
    on_postgres = _hardware(pg_platform)
    for hardware in (embedded, on_postgres):
        scenario(hardware)

    ours, theirs = documents(embedded), documents(on_postgres)
    assert sorted(ours) == sorted(theirs) and len(ours) >= 8, sorted(ours)
    for path in ours:
        assert ours[path] == theirs[path], path
    for table, columns in TABLES.items():
        sql = f"SELECT {columns} FROM {table}"  # noqa: S608
        rows = [sorted(h.platform.query(sql), key=repr) for h in (embedded, on_postgres)]
        assert rows[0] == rows[1], table
        assert rows[0] or table in ("job_errors",), f"{table} is empty: the scenario writes it"


def test_the_order_commands_work_on_postgres(pg_hardware):
    """`cmp-pipelines orders ...` with CMP_DATABASE_URL: the agent's commands read and write PostgreSQL itself."""
    import json

    from click.testing import CliRunner

    from cmp_pipelines.cli import main

    def cli(*args, ok: bool = True) -> str:
        result = CliRunner().invoke(main, list(args))
        assert (result.exit_code == 0) is ok, result.output
        return result.output

    created = json.loads(cli("orders", "create", "ACC00000003", "--billing", "IMMEDIATE", "--enrol", "--name",
                             "Jane Customer", "--line1", "1 High Street", "--town", "Leeds", "--postcode", "LS1 4AP"))
    order_id = created["order_id"]
    assert json.loads(cli("orders", "add-line", order_id, "HS-ORBIT-5", "--quantity", "2"))["total_amount"] == "659.98"
    assert "Error: sku: 'HS-NOPE' is not in the catalogue" in cli("orders", "add-line", order_id, "HS-NOPE", ok=False)
    assert cli("orders", "generate", order_id).strip() == f"{order_id}: AWAITING_GENERATION"
    assert f"Error: status: order {order_id} is AWAITING_GENERATION" in cli("orders", "generate", order_id, ok=False)
    history = json.loads(cli("orders", "show", order_id))["history"]
    assert [(h["to"], h["cause"]) for h in history] == [("NEW", "cli"), ("AWAITING_GENERATION", "cli")]
    assert pg_hardware.platform.query("SELECT status FROM hw_orders WHERE order_id = ?", [order_id]) == [
        ("AWAITING_GENERATION",)]
    pg_hardware.request()
    pg_hardware.dispatch(pg_hardware.drop_dispatch("WH_SOUTH", "s.csv.enc", [
        shipped(order_id, 1, "HS-ORBIT-5", imei(1)), shipped(order_id, 1, "HS-ORBIT-5", imei(2))]))
    assert json.loads(cli("orders", "device", imei(1)))["enrolment_status"] == "ENROL_PENDING"
    assert "is ENROL_PENDING" in cli("orders", "enrol", imei(1), ok=False)


def _killed_at(point: int, job: Callable[[], object]) -> int:
    """`job` in a forked child killed (kill -9) at its `point`-th crash point (core/crashpoints.py); its exit code:
    -9 when killed, 0 when it ended before reaching the point."""
    import multiprocessing
    import os

    def child() -> None:
        os.environ["CMP_CRASHPOINT"] = str(point)
        job()

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(300)
    assert process.exitcode is not None, "the job hung"
    return process.exitcode


def test_runs_killed_at_every_commit_leave_nothing_half_written_and_the_rerun_completes(pg_hardware):
    """The request job and a dispatch file, each killed at its first crash point, run again and killed at the next
    one, and so on until a run ends: after every kill PostgreSQL holds a step whole or not at all (a batch sent with
    its orders moved, a dispatch applied with its devices, charge and history), and the end state is the one an
    uninterrupted run gives (each order moved once, the charge posted once, the posting file written)."""
    hardware = pg_hardware
    query = hardware.platform.query
    order = hardware.order("ACC00000011", [("HS-ACME-X1", 1), ("PR-CASE-X1", 1)])
    [[up_to]] = query("SELECT max(generation_seq) FROM hw_orders")
    batch_id = f"SOR-{up_to:08d}"

    point = 1
    while _killed_at(point, request_run(hardware, batch_id)) != 0:
        [(status,)] = query("SELECT status FROM hw_orders WHERE order_id = ?", [order])
        sent = query("SELECT status FROM batches WHERE batch_id = ?", [batch_id])
        assert (status == "AWAITING_DISPATCH") == (sent == [("SENT",)]), (point, status, sent)
        point += 1
        assert point < 40
    assert point > 3  # it was killed in every step
    assert query("SELECT new_status, count(*) FROM hw_order_history WHERE order_id = ? GROUP BY 1 ORDER BY 1",
                 [order]) == [("AWAITING_DISPATCH", 1), ("AWAITING_GENERATION", 1), ("NEW", 1)]

    key = hardware.drop_dispatch("WH_NORTH", "k.csv.enc", [shipped(order, 1, "HS-ACME-X1", imei(1)),
                                                           shipped(order, 2, "PR-CASE-X1", "CASE-1")])
    point = 1
    while _killed_at(point, dispatch_run(hardware, key)) != 0:
        applied = query("SELECT count(*) FROM batches WHERE kind = 'WAREHOUSE_DISPATCH' AND status = 'APPLIED'")
        state = (query("SELECT count(*) FROM hw_devices")[0][0], query("SELECT status FROM hw_orders")[0][0],
                 query("SELECT count(*), coalesce(sum(amount_minor), 0) FROM ledger_postings "
                       "WHERE kind = 'HARDWARE_CHARGE'")[0])
        assert state == ((2, "COMPLETE", (1, 51899)) if applied == [(1,)] else (0, "AWAITING_DISPATCH", (0, 0))), \
            (point, state)
        loaded = query("SELECT count(*) FROM inbound_files WHERE status = 'LOADED'")[0][0]
        assert query("SELECT count(*) FROM hw_dispatch_records")[0][0] == 2 * loaded, point
        point += 1
        assert point < 40
    assert point > 3
    assert query("SELECT new_status, count(*) FROM hw_order_history WHERE order_id = ? AND new_status = 'COMPLETE' "
                 "GROUP BY 1", [order]) == [("COMPLETE", 1)]
    [(path,)] = query("SELECT output_path FROM batches WHERE kind = 'HARDWARE_CHARGE'")
    assert path and hardware.platform.files.exists(path)
    assert hardware.platform.files.exists("outbound/reports/warehouse_dispatch/WH_NORTH/k.csv.outcomes.json")
