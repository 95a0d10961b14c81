"""DuckDB -> PostgreSQL as Arrow: the ADBC PostgreSQL driver against psycopg 3's binary COPY (issue 19).

Builds an embedded store with N ledger postings (default 1,000,000), then moves them into a fresh migrated
PostgreSQL database with each driver, timing the whole path (DuckDB query -> Arrow batches -> COPY -> commit) and
checking the count and the sum of amount_minor after each. A third figure, psycopg streaming a CSV DuckDB writes,
shows what text COPY would give. Prints figures, never asserts.

    .venv/bin/python benchmarks/pg_copy.py [--rows 1000000] [--url postgresql://...]

Without --url it starts its own server from the local PostgreSQL binaries (tests/support/postgres.py) in a
temporary folder on a free loopback port, and stops it at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

LEDGER_COLUMNS = ("posting_id, idempotency_key, account_number, invoice_number, kind, amount_minor, currency, "
                  "batch_id, source_ref, effective_at, posted_at")


def build_store(path: Path, rows: int) -> None:
    import duckdb

    from cmp_pipelines.core.db.migrations import apply_migrations

    con = duckdb.connect(str(path))
    apply_migrations(con)
    con.execute(f"""
        INSERT INTO ledger_postings ({LEDGER_COLUMNS})
        SELECT i, 'nrp:' || md5(i::VARCHAR)[:16] || ':' || i || ':PAYMENT',
               'ACC' || lpad((i % 100000)::VARCHAR, 8, '0'),
               CASE WHEN i % 3 = 0 THEN NULL ELSE 'INV' || lpad(i::VARCHAR, 9, '0') END, 'PAYMENT',
               -(100 + (i * 7919) % 19900), 'GBP', 'NRPP-' || (i // 100000), 'PP ' || i,
               TIMESTAMPTZ '2026-11-20 14:03:00+00' + to_seconds(i), TIMESTAMPTZ '2026-12-01 06:00:00+00'
        FROM range(1, {rows + 1}) t(i)
    """)
    con.close()


def fresh_database(admin_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as con:
        con.execute(f"DROP DATABASE IF EXISTS {name}")
        con.execute(f"CREATE DATABASE {name} TEMPLATE bench_template")
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def check(url: str) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(url) as con:
        count, total = con.execute("SELECT count(*), sum(amount_minor) FROM ledger_postings").fetchone()
    return count, int(total)


def run_adbc(duck, url: str) -> None:
    from cmp_pipelines.core.db.transfer import adbc_connection, arrow_batches, ingest_adbc

    with adbc_connection(url) as pg, pg.cursor() as cur:
        ingest_adbc(cur, "ledger_postings", arrow_batches(duck, f"SELECT {LEDGER_COLUMNS} FROM ledger_postings"))
        pg.commit()


def run_psycopg(duck, url: str) -> None:
    from cmp_pipelines.core.db.postgres import connect
    from cmp_pipelines.core.db.transfer import arrow_batches, ingest_psycopg

    with connect(url) as pg, pg.transaction():
        ingest_psycopg(pg, "ledger_postings", arrow_batches(duck, f"SELECT {LEDGER_COLUMNS} FROM ledger_postings"))


def run_psycopg_csv(duck, url: str) -> None:
    from cmp_pipelines.core.db.postgres import connect

    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "postings.csv"
        duck.execute(f"COPY (SELECT {LEDGER_COLUMNS} FROM ledger_postings) TO '{target}' (HEADER false)")
        with connect(url) as pg, pg.transaction(), pg.cursor() as cur, \
                cur.copy(f"COPY ledger_postings ({LEDGER_COLUMNS}) FROM STDIN (FORMAT CSV)") as copy, \
                open(target, "rb") as handle:
            while chunk := handle.read(1 << 20):
                copy.write(chunk)


METHODS = {"adbc": run_adbc, "psycopg_binary_copy": run_psycopg, "psycopg_csv_copy": run_psycopg_csv}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--url", help="an admin URL of a server to use (default: start one)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per method; the best is reported")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    import duckdb
    import psycopg
    from servers import MissingServer, postgres

    from cmp_pipelines.core.db.migrate import migrate

    try:
        with postgres(args.url) as admin:
            figures = _measure(args, admin, duckdb, psycopg, migrate)
    except MissingServer as exc:
        print(exc)
        return 2
    fastest = min(METHODS, key=lambda m: figures[m]["best_s"])
    figures["fastest"] = fastest
    print(f"fastest: {fastest}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    os.sys.stdout.flush()
    return 0


def _measure(args: argparse.Namespace, admin: str, duckdb, psycopg, migrate) -> dict:
    figures: dict = {"rows": args.rows}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cmp.duckdb"
        started = time.perf_counter()
        build_store(path, args.rows)
        figures["build_s"] = round(time.perf_counter() - started, 2)
        with psycopg.connect(admin, autocommit=True) as con:
            con.execute("DROP DATABASE IF EXISTS bench_template")
            con.execute("CREATE DATABASE bench_template")
        migrate(admin.rsplit("/", 1)[0] + "/bench_template")
        duck = duckdb.connect(str(path), read_only=True)
        expected = duck.execute("SELECT count(*), sum(amount_minor) FROM ledger_postings").fetchall()[0]
        expected = (expected[0], int(expected[1]))
        for name, run in METHODS.items():
            times = []
            for attempt in range(args.repeat):
                url = fresh_database(admin, f"bench_{name}_{attempt}")
                started = time.perf_counter()
                run(duck, url)
                times.append(time.perf_counter() - started)
                got = check(url)
                if got != expected:
                    print(f"{name}: MISMATCH {got} != {expected}")
            best = min(times)
            figures[name] = {"best_s": round(best, 2), "rows_per_s": round(args.rows / best),
                             "runs_s": [round(t, 2) for t in times]}
            print(f"{name:<22} {best:6.2f} s  {args.rows / best:>12,.0f} rows/s  (runs {figures[name]['runs_s']})")
        duck.close()
    return figures


if __name__ == "__main__":
    sys.exit(main())
