"""An account's payment history across every flow: the seed's Payments screen.

One set-based UNION over the tables each flow already keeps (NRP records, card transactions and approved
refunds, card reversals, direct-debit collections and returns, one-off payments), so the history can never
disagree with what the flows did. Every row carries its status and reason as the flow recorded them.
Amounts are positive minor units; `kind` says which way the money went (PAYMENT and REFUND as sent,
REVERSAL and RETURN undo a payment).

The CLI reads the main store; the API reads a Parquet copy the Ledger Monitor publishes beside its read model
(the API never opens cmp.duckdb on a request), with its own, fresher one-off payments laid over it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb

from cmp_pipelines.core.money import format_minor
from cmp_pipelines.core.settings import paths

SOURCES = ("NRP", "CARD", "DIRECT_DEBIT", "ONE_OFF")
METHODS = ("CASH", "CHEQUE", "POSTAL_ORDER", "BANK_TRANSFER", "RECURRING_CARD", "DIRECT_DEBIT", "CARD_ON_FILE",
           "HOSTED_PAGE")
KINDS = ("PAYMENT", "REFUND", "REVERSAL", "RETURN")
# Every status a row can carry, as the flows name them (NRP outcome; card transaction and collection status;
# the rejection outcome of a reversal or return; the one-off payment status; APPROVED for a refund not yet sent).
STATUSES = ("ACCEPTED", "REJECTED", "HELD", "APPROVED", "EXTRACTED", "SOFT_DECLINED", "HARD_DECLINED", "CANCELLED",
            "RETRY_NOT_NEEDED", "DECLINED_UNCONFIGURED", "RETURNED_UNCONFIGURED", "RETRY_SCHEDULED",
            "RETRIES_EXHAUSTED", "RETRY_CANCELLED", "HARD_DECLINE", "UNCONFIGURED_CODE", "AWAITING_CARD", "PENDING",
            "SUCCEEDED", "DECLINED", "FAILED")
COLUMNS = ("payment_ref", "account_number", "date", "source", "method", "kind", "amount_minor", "currency", "status",
           "reason_code", "reason", "invoice_number", "reference", "batch_id")
_REVERSED = "('RETRY_SCHEDULED', 'RETRIES_EXHAUSTED', 'RETRY_CANCELLED', 'HARD_DECLINE', 'UNCONFIGURED_CODE')"

# The whole history, every account. Each branch is filtered by the account before the union is read (DuckDB
# pushes the outer WHERE into every branch), so one account's page costs index-free scans of the rows only.
HISTORY_SQL = f"""
SELECT n.batch_id || ':' || coalesce(n.record_id, n.position::VARCHAR) AS payment_ref, n.account_number,
       coalesce(timezone('UTC', n.payment_date), timezone('UTC', b.created_at))::DATE AS date, 'NRP' AS source,
       n.payment_method AS method, 'PAYMENT' AS kind, n.amount_minor, n.currency, n.outcome AS status,
       n.reason_code, n.reason, n.invoice_number, n.reference, n.batch_id
FROM nrp_records n JOIN batches b USING (batch_id)
UNION ALL
SELECT t.transaction_id, t.account_number, t.business_date, 'CARD', 'RECURRING_CARD', t.kind, t.amount_minor,
       t.currency, t.status, t.reason_code, c.description, t.invoice_number, t.refund_id, t.batch_id
FROM card_transactions t LEFT JOIN config_rejection_codes c ON c.code = t.reason_code
UNION ALL
SELECT r.refund_id, r.account_number, r.due_on, 'CARD', 'RECURRING_CARD', 'REFUND', r.amount_minor, r.currency,
       'APPROVED', NULL, r.reason, NULL, NULL, NULL
FROM card_refunds r ANTI JOIN card_transactions t ON t.refund_id = r.refund_id
UNION ALL
SELECT j.batch_id || ':' || coalesce(j.record_id, j.position::VARCHAR), t.account_number,
       coalesce(timezone('UTC', j.rejected_at), timezone('UTC', b.created_at))::DATE, 'CARD', 'RECURRING_CARD',
       'REVERSAL', t.amount_minor, t.currency, j.outcome, j.reason_code, c.description, t.invoice_number,
       t.transaction_id, j.batch_id
FROM card_rejections j JOIN card_transactions t USING (transaction_id) JOIN batches b ON b.batch_id = j.batch_id
LEFT JOIN config_rejection_codes c ON c.code = j.reason_code
WHERE j.outcome IN {_REVERSED}
UNION ALL
SELECT d.collection_id, d.account_number, d.business_date, 'DIRECT_DEBIT', 'DIRECT_DEBIT', 'PAYMENT', d.amount_minor,
       d.currency, d.status, d.reason_code, c.description,
       (SELECT string_agg(i.invoice_number, ' ' ORDER BY i.invoice_number) FROM dd_collection_items i
        WHERE i.collection_id = d.collection_id), d.reference, d.batch_id
FROM dd_collections d LEFT JOIN config_rejection_codes c ON c.code = d.reason_code
UNION ALL
SELECT r.batch_id || ':' || r.position::VARCHAR, d.account_number, timezone('UTC', b.created_at)::DATE,
       'DIRECT_DEBIT', 'DIRECT_DEBIT', 'RETURN', d.amount_minor, d.currency, r.outcome, r.reason_code,
       coalesce(c.description, r.return_description), NULL, d.collection_id, r.batch_id
FROM dd_returns r JOIN dd_collections d USING (collection_id) JOIN batches b ON b.batch_id = r.batch_id
LEFT JOIN config_rejection_codes c ON c.code = r.reason_code
WHERE r.outcome IN {_REVERSED}
UNION ALL
SELECT o.payment_id, o.account_number, timezone('UTC', coalesce(o.completed_at, o.created_at))::DATE, 'ONE_OFF',
       o.method, 'PAYMENT', o.amount_minor, o.currency, o.status, o.reason_code, NULL, NULL, NULL, o.batch_id
FROM one_off_payments o
"""


class HistoryFilterError(ValueError):
    """A filter the history cannot apply; `field` names it (the API answers 422, the CLI exits 2)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True)
class HistoryFilter:
    method: str | None = None
    status: str | None = None
    kind: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    limit: int = 50
    offset: int = 0

    def check(self) -> HistoryFilter:
        for name, allowed in (("method", METHODS), ("status", STATUSES), ("kind", KINDS)):
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise HistoryFilterError(name, f"{value!r} is not a {name}; use one of {', '.join(allowed)}")
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise HistoryFilterError("from", f"{self.date_from} is after to {self.date_to}")
        if not 1 <= self.limit <= 500:
            raise HistoryFilterError("limit", "must be 1-500")
        if self.offset < 0:
            raise HistoryFilterError("offset", "must be 0 or more")
        return self


@dataclass(frozen=True)
class HistoryPage:
    account_number: str
    rows: list[dict]
    total: int
    limit: int
    offset: int

    @property
    def next_offset(self) -> int | None:
        return self.offset + len(self.rows) if self.offset + len(self.rows) < self.total else None

    def as_dict(self) -> dict:
        return {"account_number": self.account_number, "total": self.total, "limit": self.limit,
                "offset": self.offset, "next_offset": self.next_offset, "payments": self.rows}


_WHERE = """account_number = $account AND ($method IS NULL OR method = $method)
          AND ($status IS NULL OR status = $status) AND ($kind IS NULL OR kind = $kind)
          AND ($from IS NULL OR date >= $from) AND ($to IS NULL OR date <= $to)"""


def page(con: duckdb.DuckDBPyConnection, relation: str, account_number: str, flt: HistoryFilter,
         params: dict | None = None) -> HistoryPage:
    """One page of `relation` (the history SQL, or the API's published copy) for an account, newest first."""
    flt.check()
    rows = con.execute(
        f"""
        SELECT {', '.join(c for c in COLUMNS if c not in ('date', 'amount_minor'))}, date::VARCHAR AS date,
               amount_minor, count(*) OVER () AS total
        FROM ({relation}) h WHERE {_WHERE}
        ORDER BY h.date DESC, source, payment_ref DESC
        LIMIT $limit OFFSET $offset
        """,
        {**(params or {}), "account": account_number, "method": flt.method, "status": flt.status, "kind": flt.kind,
         "from": flt.date_from, "to": flt.date_to, "limit": flt.limit, "offset": flt.offset},
    )
    names = [d[0] for d in rows.description]
    records = [dict(zip(names, r, strict=True)) for r in rows.fetchall()]
    total = records[0]["total"] if records else _count(con, relation, account_number, flt, params)
    return HistoryPage(account_number, [_view(r) for r in records], total, flt.limit, flt.offset)


def _count(con, relation: str, account_number: str, flt: HistoryFilter, params: dict | None) -> int:
    """The total when the page is empty (an offset past the end): the window count has no row to ride on."""
    if flt.offset == 0:
        return 0
    return con.execute(
        f"SELECT count(*) FROM ({relation}) h WHERE {_WHERE}",
        {**(params or {}), "account": account_number, "method": flt.method, "status": flt.status, "kind": flt.kind,
         "from": flt.date_from, "to": flt.date_to}).fetchone()[0]


def _view(row: dict) -> dict:
    return {"payment_ref": row["payment_ref"], "date": row["date"], "source": row["source"], "method": row["method"],
            "kind": row["kind"], "amount": None if row["amount_minor"] is None else format_minor(row["amount_minor"]),
            "currency": row["currency"], "status": row["status"], "reason_code": row["reason_code"],
            "reason": row["reason"], "invoice_number": row["invoice_number"], "reference": row["reference"],
            "batch_id": row["batch_id"]}


def account_history(con: duckdb.DuckDBPyConnection, account_number: str, flt: HistoryFilter) -> HistoryPage | None:
    """The main store's history of an account; None when the account does not exist."""
    if not con.execute("SELECT 1 FROM accounts WHERE account_number = ? AND NOT is_suspense",
                       [account_number]).fetchone():
        return None
    return page(con, HISTORY_SQL, account_number, flt)


def published_history_path() -> Path:
    """Beside the API's read model: what `publish_history` writes and the API reads."""
    return paths().data_dir / "api_payment_history.parquet"


def publish_history(con: duckdb.DuckDBPyConnection, path: Path, *, without_one_off: bool = True) -> int:
    """Copy the history (without one-off payments, which the API keeps fresher itself) to a Parquet file and swap
    it in: the API reads one file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    where = "WHERE source <> 'ONE_OFF'" if without_one_off else ""
    target = str(tmp).replace("'", "''")
    con.execute(f"COPY (SELECT {', '.join(COLUMNS)} FROM ({HISTORY_SQL}) h {where}) TO '{target}' (FORMAT parquet)")
    count = con.execute("SELECT count(*) FROM read_parquet(?)", [str(tmp)]).fetchone()[0]
    os.replace(tmp, path)
    return count
