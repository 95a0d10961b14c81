"""The API's two backends behind one interface (core/db/api_store.ApiBackend), chosen once at start-up:

- embedded (no `CMP_DATABASE_URL`): payments in api.sqlite, accounts/balances/cards/events from the read model the
  Ledger Monitor publishes (with the API's own set-up changes laid over it), history from the published Parquet
  copy, set-up applied to cmp.duckdb when it is free within a short wait, else queued (202);
- PostgreSQL: core/db/api_postgres.PostgresApiStore, everything read and written in the store itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from cmp_pipelines.core.db.api_store import ApiBackend, ApiStore, ReadModel, one_off_history, open_api_store
from cmp_pipelines.core.db.connection import StoreBusyError, connect
from cmp_pipelines.core.payment_history import HistoryFilter, page, published_history_path
from cmp_pipelines.core.settings import store
from cmp_pipelines.core.setup_requests import apply_request, record_overlay

_main_store = threading.Lock()  # one API thread at a time in cmp.duckdb, so waits stay bounded


class EmbeddedBackend:
    def __init__(self, store: ApiStore, read_model: ReadModel, main_store: Path, wait_seconds: float = 0.3):
        self.store, self.read_model, self.main_store, self.wait_seconds = store, read_model, main_store, wait_seconds

    def account(self, account_number: str) -> dict | None:
        """The published account, with the API's own set-up changes made since the publish laid over it."""
        row = self.read_model.account(account_number)
        if row is None:
            return None
        view = dict(row)
        overlay = self.store.one("SELECT * FROM account_overlay WHERE account_number = ?", [account_number])
        if overlay is not None and overlay["applied_at"] > (row["published_at"] or ""):
            view.update(payment_type=overlay["payment_type"], card_provider=overlay["card_provider"],
                        card_token=overlay["card_token"], last_four=overlay["last_four"], expiry=overlay["expiry"])
        return view

    def published_at(self) -> str | None:
        return self.read_model.published_at()

    def events(self, account_number: str, status: str | None, limit: int) -> list[dict]:
        return [dict(row) for row in self.read_model.events(account_number, status, limit)]

    def history(self, account_number: str, flt: HistoryFilter) -> dict:
        one_off = one_off_history(self.store.account_payments(account_number), account_number)
        published = published_history_path()
        con = duckdb.connect()  # in memory: this request's own engine over the published file
        try:
            con.register("api_one_off", one_off)
            if published.exists():
                relation = ("SELECT * FROM read_parquet($path) WHERE source <> 'ONE_OFF' "
                            "UNION ALL BY NAME SELECT * FROM api_one_off")
                return page(con, relation, account_number, flt, {"path": str(published)}).as_dict()
            return page(con, "SELECT * FROM api_one_off", account_number, flt).as_dict()
        finally:
            con.close()

    def on_main_store(self, work: Callable[[Any], Any]) -> Any:
        """`work(con)` on cmp.duckdb, or StoreBusyError when a pipeline run keeps it past the short wait."""
        if not _main_store.acquire(timeout=self.wait_seconds):
            raise StoreBusyError("another API request holds the store")
        try:
            with connect(self.main_store, wait_seconds=self.wait_seconds) as con:
                return work(con)
        finally:
            _main_store.release()

    def apply_setup(self, kind: str, account_number: str, body: dict, *, now: datetime, cause: str,
                    client_id: str, channel: str, request_id: str) -> dict | None:
        """The result, or None when the request must be queued: one queued already for the account (applying now
        would overtake it) or the main store busy."""
        if self.store.queued_for(account_number):
            return None
        try:
            result = self.on_main_store(lambda con: apply_request(con, kind, account_number, body, now=now,
                                                                  cause=cause))
        except StoreBusyError:
            return None
        record_overlay(self.store, kind, result, now)
        return result


def build_backend(main_store: Path) -> ApiBackend:
    """PostgreSQL when `CMP_DATABASE_URL` is set (the store is also the backend), else the embedded one."""
    if store().backend == "postgres":
        return open_api_store()
    return EmbeddedBackend(ApiStore(background_checkpoint=True), ReadModel(), main_store)
