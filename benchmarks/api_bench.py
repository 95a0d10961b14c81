"""Create-payment load on the HTTP API: 50 concurrent keep-alive clients on loopback, alone and while a
1,000,000-record NRP file posts into the same data folder's `cmp.duckdb` (another process holding it).

The server is `cmp-pipelines api serve` in its own process (uvicorn, one worker, access log off); the load
comes from this process: a small asyncio HTTP/1.1 client (no client library in the measured path, so
the figures are the server's). Every request is a new payment (a fresh Idempotency-Key) charged to a
card on file through the sandbox provider; anything but 201 counts as an error.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import uvloop

TARGETS = {"rps": 500, "p99_alone_ms": 50, "p99_batch_ms": 250}
CARD_ACCOUNTS = 10_000
API_KEY = "bench-agent-key-0123456789abcdef0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(data_dir: Path, workdir: Path) -> dict:
    """Cards for the first accounts of the staged store, the API key's hash, the read model (untimed)."""
    env = _env(data_dir, workdir)
    script = f"""
import os
from datetime import UTC, datetime
from cmp_pipelines.core.config_payments import hash_key, write_key_hash
from cmp_pipelines.defs.one_off.flow import publish_accounts
from cmp_pipelines.core.settings import paths
from cmp_pipelines.core.db.connection import connect
write_key_hash(paths().keys_dir, "AGENTVIEW", hash_key({API_KEY!r}))
with connect(paths().database) as con:
    con.execute("INSERT INTO payment_cards SELECT account_number, 'CARDPAY', 'tok_bench_' || account_number, "
                "'4242', '2030-01', now() FROM accounts WHERE NOT is_suspense ORDER BY account_number "
                "LIMIT {CARD_ACCOUNTS} ON CONFLICT DO NOTHING")
    con.execute("CHECKPOINT")
    print(publish_accounts(con, datetime.now(UTC)))
"""
    out = subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True)
    return {"published_accounts": int(out.stdout.strip().splitlines()[-1])}


def _env(data_dir: Path, workdir: Path) -> dict:
    env = dict(os.environ)
    env.update(CMP_DATA_DIR=str(data_dir), CMP_KEYS_DIR=str(workdir / "keys"),
               DAGSTER_HOME=str(workdir / "dagster_home"), CMP_PROVIDER_SECRET="bench-secret")
    return env


def accounts_and_info(args) -> tuple[list[str], dict]:
    """The accounts with a card on file the clients pay against, and the figures' header (clients, workers, CPUs,
    load average before), from a harness's `--accounts`, `--api-clients` and `--api-workers`."""
    accounts = [f"ACC{i:08d}" for i in range(1, min(CARD_ACCOUNTS, args.accounts) + 1)]
    return accounts, {"clients": args.api_clients, "workers": args.api_workers, "cpus": os.cpu_count(),
                      "loadavg": " ".join(f"{v:.2f}" for v in os.getloadavg())}


def start_server(data_dir: Path, workdir: Path, workers: int = 1, env: dict | None = None
                 ) -> tuple[subprocess.Popen, int]:
    """`api serve` on a free loopback port over `data_dir`, with `env` added to its environment."""
    port = _free_port()
    log = open(workdir / "api-server.log", "w")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen(
        [sys.executable, "-m", "cmp_pipelines.cli", "api", "serve", "--port", str(port), "--no-access-log",
         "--workers", str(workers)],
        env={**_env(data_dir, workdir), **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return server, port
        except OSError:
            if server.poll() is not None:
                raise RuntimeError(f"API server exited; see {workdir / 'api-server.log'}") from None
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("API server did not start in 60 s")


def _request(port: int, accounts: list[str]) -> bytes:
    body = json.dumps({"account_number": random.choice(accounts), "amount": f"{random.randint(100, 9999) / 100:.2f}",
                       "method": "CARD_ON_FILE"}).encode()
    return (f"POST /v1/payments HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-API-Key: {API_KEY}\r\n"
            f"Idempotency-Key: {secrets.token_urlsafe(18)}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class _Connection:
    """One keep-alive client connection, reopened after a failure (which counts as an error)."""

    def __init__(self, port: int):
        self.port, self.reader, self.writer = port, None, None

    async def send(self, request: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")  # the status line and headers in one read
        status = int(head[9:12])
        at = head.lower().find(b"\r\ncontent-length:")
        length = int(head[at + 17:head.index(b"\r\n", at + 2)]) if at >= 0 else 0
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.writer = None


async def _client(connection: _Connection, accounts: list[str], until, latencies: list[float],
                  errors: list[str]) -> None:
    while not until():
        request = _request(connection.port, accounts)
        started = time.perf_counter()
        try:
            status = await connection.send(request)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as exc:
            errors.append(type(exc).__name__)
            connection.close()
            continue
        latencies.append(time.perf_counter() - started)
        if status != 201:
            errors.append(f"HTTP {status}")


def load(port: int, accounts: list[str], clients: int, seconds: float | None = None,
         while_running: subprocess.Popen | None = None, warmup_s: float = 2.0) -> dict:
    """`clients` connections hammering create-payment for `seconds`, or for as long as `while_running` runs.
    The connections are opened and warmed up first; only the requests after that are measured."""

    async def run() -> dict:
        connections = [_Connection(port) for _ in range(clients)]
        stop_at = time.perf_counter() + warmup_s
        await asyncio.gather(*(_client(c, accounts, lambda: time.perf_counter() > stop_at, [], [])
                               for c in connections))
        latencies: list[float] = []
        errors: list[str] = []
        started = time.perf_counter()
        if while_running is None:
            def until() -> bool:
                return time.perf_counter() - started > seconds
        else:
            def until() -> bool:
                return while_running.poll() is not None
        await asyncio.gather(*(_client(c, accounts, until, latencies, errors) for c in connections))
        elapsed = time.perf_counter() - started
        for connection in connections:
            connection.close()
        ordered = sorted(latencies)

        def pct(p: float) -> float:
            return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else float("nan")

        return {"requests": len(latencies), "errors": len(errors), "error_kinds": sorted(set(errors))[:5],
                "seconds": elapsed, "rps": len(latencies) / elapsed if elapsed else 0.0,
                "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": ordered[-1] * 1000 if ordered else float("nan")}

    # uvloop (the server's own loop, installed with uvicorn[standard]): the load generator shares the two cores
    # with the server, so the less CPU it takes per request, the less it inflates the latencies it measures.
    return uvloop.run(run())


def report(alone: dict, during: dict | None, meta: dict) -> None:
    print()
    print(f"HTTP API: create payment, {meta['clients']} concurrent keep-alive clients on loopback, "
          f"{meta['workers']} uvicorn worker(s) ({meta['cpus']} CPUs; load average before: {meta['loadavg']})")
    header = f"  {'figure':<50} {'value':>14} {'target':>14} {'value/target':>13}"
    print(header)
    print("  " + "-" * (len(header) - 2))

    def row(name: str, value: str, target: str = "", ratio: float | None = None) -> None:
        print(f"  {name:<50} {value:>14} {target:>14} {'' if ratio is None else f'{ratio:.2f}':>13}")

    for label, run, p99_target in (("alone", alone, TARGETS["p99_alone_ms"]),
                                   ("while the NRP batch posts", during, TARGETS["p99_batch_ms"])):
        if run is None:
            continue
        row(f"{label}: requests/s", f"{run['rps']:,.0f}", f">= {TARGETS['rps']}", run["rps"] / TARGETS["rps"])
        row("    p50 latency", f"{run['p50_ms']:.1f} ms")
        row("    p99 latency", f"{run['p99_ms']:.1f} ms", f"<= {p99_target} ms", run["p99_ms"] / p99_target)
        row("    max latency", f"{run['max_ms']:.1f} ms")
        row("    requests / errors", f"{run['requests']:,} / {run['errors']}", "0 errors")
        if run["errors"]:
            row("    error kinds", ", ".join(run["error_kinds"]))
        row("    measured for", f"{run['seconds']:.1f} s")
    if during is not None and "nrp_total_s" in meta:
        row("NRP flow during the load (its own figure)", f"{meta['nrp_total_s']:.2f} s")
