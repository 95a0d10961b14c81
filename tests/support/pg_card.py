"""The card flows on either store, for the tests that run the same bodies on DuckDB and on PostgreSQL
(tests/flows/card_payments/test_card_postgres.py, tests/flows/card_rejections/test_card_rejections_postgres.py).

`platform` is the embedded `Platform` or a `PgPlatform` (tests/support/pg_platform.py): on PostgreSQL each call runs
the flow on a scratch DuckDB linked to the test's database (core/db/mirror.py), as a run does."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime

import pytest

from cmp_pipelines.core.config import load_partners, load_rejection_codes
from cmp_pipelines.core.db.mirror import mirrored
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.defs.card_payments.flow import RecurringCardPayments
from cmp_pipelines.defs.card_rejections.flow import CardRejections
from tests.support.pg_platform import PgPlatform, moved_to_postgres

CONFIG = PROJECT_ROOT / "config"


@contextmanager
def flow_store(platform) -> Iterator[tuple]:
    """(con, mirror) as `Database.flow_store` gives them: the DuckDB file and no mirror, or a scratch and its link."""
    if isinstance(platform, PgPlatform):
        with mirrored(platform.url) as mirror:
            yield mirror.con, mirror
    else:
        with platform.connect() as con:
            yield con, None


def execute(platform, sql: str, params=None) -> None:
    if isinstance(platform, PgPlatform):
        platform.execute(sql, params)
    else:
        with platform.connect() as con:
            con.execute(sql, params or [])


def card_flow(platform, con, mirror, now: datetime) -> RecurringCardPayments:
    return RecurringCardPayments(con, platform.files, platform.keyring, load_partners(CONFIG), now, mirror=mirror)


def send_notices(platform, up_to: date) -> None:
    """The notice step on every day an invoice without a card notice was issued (<= `up_to`), each notice then
    marked sent that morning, as the dispatcher would (the dispatcher is not what these tests are about)."""
    days = [d for (d,) in platform.query(
        "SELECT DISTINCT issued_on FROM invoices i WHERE issued_on <= ? AND NOT EXISTS (SELECT 1 FROM "
        "collection_notices n WHERE n.invoice_number = i.invoice_number AND n.payment_type = 'RECURRING_CARD') "
        "ORDER BY 1", [up_to])]
    for day in days:
        now = datetime(day.year, day.month, day.day, 1, tzinfo=UTC)
        with flow_store(platform) as (con, mirror):
            card_flow(platform, con, mirror, now).raise_notices(day)
        execute(platform, "UPDATE collection_notices SET status = 'SENT', sent_at = ? WHERE status = 'RAISED'", [now])


def card_day(platform, day: date, now: datetime | None = None):
    """The CARD-mode job for `day` in the job's order (notices, selection, postings, extract, posting file)."""
    now = now or datetime(day.year, day.month, day.day, 2, tzinfo=UTC)
    send_notices(platform, day)
    with flow_store(platform) as (con, mirror):
        flow = card_flow(platform, con, mirror, now)
        flow.raise_notices(day)
        due = flow.select_due(day)
        flow.post(flow.due(day))
        flow.write_extracts(flow.due(day))
        flow.write_posting_file(flow.posted(due))
        return due


def process_rejections(platform, key: str, now: datetime):
    """The four Rejections job steps for one file; returns (load, applied)."""
    with flow_store(platform) as (con, mirror):
        flow = CardRejections(con, platform.files, platform.keyring, load_partners(CONFIG),
                              load_rejection_codes(CONFIG), now, mirror=mirror)
        load = flow.load(key)
        applied = flow.apply(flow.loaded(key))
        flow.write_posting_file(flow.applied(load))
        flow.write_reports(flow.loaded(key))
        return load, applied


def on_store(request, platform, monkeypatch):
    """`platform` as it is (DuckDB) or moved into PostgreSQL, by the test's `store` parameter."""
    if request.param == "duckdb":
        return platform
    return moved_to_postgres(platform, request.getfixturevalue("pg_url"), monkeypatch)


STORES = ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)]
