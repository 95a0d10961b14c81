"""The rejection-code tables kept equal to config/payments_rejections YAML on both stores (issue 19): an upsert of
what differs and a removal of what is no longer configured; on PostgreSQL in a short transaction of its own under
the advisory lock `config:rejection_codes`, so two runs syncing at once neither fail nor leave a code twice."""

from __future__ import annotations

import dataclasses
import threading
import time

import duckdb
import psycopg
import pytest

from cmp_pipelines.core.config import load_mandate_revision_codes, load_rejection_codes
from cmp_pipelines.core.db.migrations import apply_migrations
from cmp_pipelines.core.db.mirror import advisory_key, mirrored
from cmp_pipelines.core.reference import (
    MANDATE_REVISION_CODES_LOCK,
    REJECTION_CODES_LOCK,
    sync_mandate_revision_codes,
    sync_mandate_revision_codes_postgres,
    sync_rejection_codes,
    sync_rejection_codes_postgres,
)
from tests.support.direct_debit import CONFIG_DIR

CONFIG = load_rejection_codes(CONFIG_DIR)
SQL_CODES = "SELECT code, description, retries FROM config_rejection_codes ORDER BY code"
SQL_RETURNS = "SELECT return_code, rejection_code, mandate_action FROM config_bacs_return_codes ORDER BY return_code"


def _changed(config=CONFIG):
    """The configuration with its first code's description changed and its last card code removed (with any Bacs
    return code that mapped to it)."""
    first, gone = sorted(config.codes)[0], sorted(config.card_codes)[-1]
    codes = {code: c for code, c in config.codes.items() if code != gone}
    codes[first] = dataclasses.replace(codes[first], description="Changed by the operator")
    returns = {r: code for r, code in config.bacs_return_codes.items() if code != gone}
    return dataclasses.replace(config, codes=codes, bacs_return_codes=returns), first, gone


def _expected(config):
    codes = sorted((c.code, c.description, c.retries) for c in config.codes.values())
    returns = sorted((r, code, config.mandate_actions.get(code, "HOLD"))
                     for r, code in config.bacs_return_codes.items())
    return codes, returns


def test_the_configuration_has_codes_and_return_codes_to_sync():
    assert len(CONFIG.codes) >= 4 and CONFIG.bacs_return_codes


def test_duckdb_sync_updates_a_description_and_drops_a_removed_code():
    changed, first, gone = _changed()
    con = duckdb.connect()
    apply_migrations(con)
    sync_rejection_codes(con, CONFIG)
    sync_rejection_codes(con, CONFIG)  # again: nothing twice
    assert (con.execute(SQL_CODES).fetchall(), con.execute(SQL_RETURNS).fetchall()) == _expected(CONFIG)

    sync_rejection_codes(con, changed)
    codes = con.execute(SQL_CODES).fetchall()
    assert (codes, con.execute(SQL_RETURNS).fetchall()) == _expected(changed)
    assert gone not in {c for c, _, _ in codes}
    assert dict((c, d) for c, d, _ in codes)[first] == "Changed by the operator"
    assert len(codes) == len(CONFIG.codes) - 1


@pytest.mark.postgres
def test_postgres_sync_holds_the_yaml_and_the_scratch_copies_it(pg_store):
    changed, first, gone = _changed()
    with mirrored(pg_store) as mirror:
        sync_rejection_codes_postgres(mirror, CONFIG)
        assert (mirror.con.execute(SQL_CODES).fetchall(), mirror.con.execute(SQL_RETURNS).fetchall()) == \
            _expected(CONFIG)
    with psycopg.connect(pg_store) as pg:
        assert (pg.execute(SQL_CODES).fetchall(), pg.execute(SQL_RETURNS).fetchall()) == _expected(CONFIG)
        pg.execute("UPDATE config_rejection_codes SET retries = 9 WHERE code = %s", [first])  # drift, put right

    with mirrored(pg_store) as mirror:
        sync_rejection_codes_postgres(mirror, changed)
        assert mirror.con.execute(SQL_CODES).fetchall() == _expected(changed)[0]
    with psycopg.connect(pg_store) as pg:
        codes = pg.execute(SQL_CODES).fetchall()
        assert (codes, pg.execute(SQL_RETURNS).fetchall()) == _expected(changed)
        assert gone not in {c for c, _, _ in codes}
        assert dict((c, d) for c, d, _ in codes)[first] == "Changed by the operator"
        xmin = pg.execute("SELECT code, xmin::text FROM config_rejection_codes ORDER BY code").fetchall()
    with mirrored(pg_store) as mirror:  # the same configuration again rewrites no row
        sync_rejection_codes_postgres(mirror, changed)
    with psycopg.connect(pg_store) as pg:
        assert pg.execute("SELECT code, xmin::text FROM config_rejection_codes ORDER BY code").fetchall() == xmin


def _sync_at_once(pg_store: str, sync, configs: tuple, rounds: int) -> list[Exception]:
    """Two threads, each with its own connection, syncing at the same instant `rounds` times (one the first
    configuration, the other the second, swapping each time); the errors they met."""
    barrier, errors = threading.Barrier(2), []

    def syncer(index: int) -> None:
        try:
            with mirrored(pg_store) as mirror:
                for n in range(rounds):
                    barrier.wait(timeout=30)
                    sync(mirror, configs[(index + n) % 2])
        except Exception as exc:  # noqa: BLE001 - returned to the test
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=syncer, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors


@pytest.mark.postgres
def test_two_runs_syncing_at_once_neither_fail_nor_leave_a_code_twice(pg_store):
    """Two threads, each with its own connection, sync 15 times at the same instant (one the configuration, the
    other the changed one, swapping each time): no error, and one row per code, matching whichever synced last."""
    changed, _, _ = _changed()
    assert _sync_at_once(pg_store, sync_rejection_codes_postgres, (CONFIG, changed), 15) == []
    with psycopg.connect(pg_store) as pg:
        codes = pg.execute(SQL_CODES).fetchall()
        returns = pg.execute(SQL_RETURNS).fetchall()
    assert len({c for c, _, _ in codes}) == len(codes)
    assert (codes, returns) in (_expected(CONFIG), _expected(changed))


@pytest.mark.postgres
def test_a_sync_waits_for_the_advisory_lock(pg_store):
    """While another session holds `config:rejection_codes`, a sync changes nothing; it completes once released."""
    done = threading.Event()

    def sync() -> None:
        with mirrored(pg_store) as mirror:
            sync_rejection_codes_postgres(mirror, CONFIG)
        done.set()

    with psycopg.connect(pg_store) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", [advisory_key(REJECTION_CODES_LOCK)])
        thread = threading.Thread(target=sync)
        thread.start()
        time.sleep(1.0)
        assert not done.is_set()
        with psycopg.connect(pg_store) as other:
            assert other.execute("SELECT count(*) FROM config_rejection_codes").fetchone() == (0,)
        holder.commit()
    thread.join(timeout=30)
    assert done.is_set()
    with psycopg.connect(pg_store) as pg:
        assert pg.execute(SQL_CODES).fetchall() == _expected(CONFIG)[0]


@pytest.mark.postgres
def test_the_api_payment_history_on_postgres_names_the_decline_reason(pg_store):
    """The API reads config_rejection_codes from PostgreSQL itself: before this sync held it there, a declined card
    payment's reason was missing (None) from the history on PostgreSQL."""
    from cmp_pipelines.core.db.api_postgres import PostgresApiStore
    from cmp_pipelines.core.payment_history import HistoryFilter

    code = sorted(CONFIG.card_codes)[0]
    with psycopg.connect(pg_store) as pg:
        pg.execute("INSERT INTO card_transactions (transaction_id, batch_id, business_date, provider, kind, "
                   "account_number, amount_minor, currency, card_token, attempt, first_transaction_id, due_on, status, "
                   "reason_code) VALUES ('CT1', 'RCX-1', DATE '2026-12-01', 'CARDPAY', 'PAYMENT', 'ACC00000001', "
                   "1999, 'GBP', 'tok', 1, 'CT1', DATE '2026-12-01', 'DECLINED', %s)", [code])
    store = PostgresApiStore(pg_store, pool_size=1)
    try:
        assert [(p["amount"], p["reason_code"], p["reason"]) for p in
                store.history("ACC00000001", HistoryFilter())["payments"]] == [("19.99", code, None)]
        with mirrored(pg_store) as mirror:
            sync_rejection_codes_postgres(mirror, CONFIG)
        assert [(p["amount"], p["reason_code"], p["reason"]) for p in
                store.history("ACC00000001", HistoryFilter())["payments"]] == [
            ("19.99", code, CONFIG.codes[code].description)]
    finally:
        store.close()


REVISIONS = load_mandate_revision_codes(CONFIG_DIR)
SQL_REVISIONS = "SELECT code, name, action, event_code FROM config_mandate_revision_codes ORDER BY code"


def _revisions_changed() -> tuple[dict, str, str]:
    first, gone = sorted(REVISIONS)[0], sorted(REVISIONS)[-1]
    codes = {code: c for code, c in REVISIONS.items() if code != gone}
    codes[first] = dataclasses.replace(codes[first], name="Renamed by the operator")
    return codes, first, gone


def _revision_rows(codes: dict) -> list[tuple]:
    return sorted((c.code, c.name, c.action, c.event.event_code) for c in codes.values())


def test_the_addacs_reasons_sync_on_duckdb_like_the_rejection_codes(tmp_path):
    con = duckdb.connect(str(tmp_path / "cmp.duckdb"))
    apply_migrations(con)
    sync_mandate_revision_codes(con, REVISIONS)
    assert con.execute(SQL_REVISIONS).fetchall() == _revision_rows(REVISIONS)
    changed, first, gone = _revisions_changed()
    sync_mandate_revision_codes(con, changed)
    rows = con.execute(SQL_REVISIONS).fetchall()
    assert rows == _revision_rows(changed) and gone not in {r[0] for r in rows}
    assert dict((r[0], r[1]) for r in rows)[first] == "Renamed by the operator"


@pytest.mark.postgres
def test_the_addacs_reasons_are_held_by_postgres_and_two_syncs_at_once_take_turns(pg_store):
    changed, first, gone = _revisions_changed()
    with mirrored(pg_store) as mirror:
        sync_mandate_revision_codes_postgres(mirror, REVISIONS)
        assert mirror.con.execute(SQL_REVISIONS).fetchall() == _revision_rows(REVISIONS)  # the scratch's copy
    with psycopg.connect(pg_store) as pg:
        assert pg.execute(SQL_REVISIONS).fetchall() == _revision_rows(REVISIONS)

    assert _sync_at_once(pg_store, sync_mandate_revision_codes_postgres, (REVISIONS, changed), 10) == []
    done = threading.Event()

    def sync() -> None:
        with mirrored(pg_store) as mirror:
            sync_mandate_revision_codes_postgres(mirror, changed)
        done.set()

    with psycopg.connect(pg_store) as holder:  # the sync waits for the lock named in the docs
        holder.execute("SELECT pg_advisory_xact_lock(%s)", [advisory_key(MANDATE_REVISION_CODES_LOCK)])
        thread = threading.Thread(target=sync)
        thread.start()
        time.sleep(1.0)
        assert not done.is_set()
        holder.commit()
    thread.join(timeout=30)
    assert done.is_set()
    with psycopg.connect(pg_store) as pg:
        rows = pg.execute(SQL_REVISIONS).fetchall()
    assert rows == _revision_rows(changed) and gone not in {r[0] for r in rows}
    assert dict((r[0], r[1]) for r in rows)[first] == "Renamed by the operator"
