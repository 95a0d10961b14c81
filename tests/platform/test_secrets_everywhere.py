"""Issue 18: after the whole headless demo (`make demo`'s commands, each a real process) plus a catalogue of bad
inputs carrying test card numbers and API keys (partner files of four feeds, HTTP and SOAP requests to a real
`api serve`, CLI arguments), no file the platform wrote and no output it printed holds a card number, in any
separator form, or an API key. The one exception is by design: `api keys init` shows a new key once, on the
terminal that asked for it."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import httpx
import orjson
import pytest

from cmp_pipelines.core.cards import SEPARATOR_CHARS
from cmp_pipelines.core.config_payments import hash_key, write_key_hash
from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.payment_provider import SIGNATURE_HEADER, sign
from cmp_pipelines.demo.data import nrp_document
from tests.support.api import free_port, serve_api

PANS = ("4111111111111111", "5555555555554444", "378282246310005", "30569309025904", "6011111111111117")
TYPED = [  # how the catalogue types them: beside dates, CVVs and expiries, behind every separator
    "4111 1111 1111 1111 12/29", "5555555555554444 123", "paid 01.12.2026 378282246310005", "5555_5555_5555_4444",
    "4111111111111111-1229", "3056\t9309\t0259\t04", "6011,1111,1111,1117", "4111.1111.1111.1111",
    "\uff14\uff11\uff11\uff11 1111 1111 1111",
]
AGENT_KEY = "cmp_secretsTestAgentKey_0123456789abcdefghijkl"
PROVIDER_SECRET = "secrets-test-provider-secret-0123456789"
_SEP = "[" + re.escape(SEPARATOR_CHARS) + "]*"


def _pan_pattern(pan: str) -> re.Pattern[str]:
    """The card number with any run of separators between its digits, full-width digits included."""
    return re.compile(_SEP.join(f"[{d}{chr(0xFF10 + int(d))}]" for d in pan))


PAN_PATTERNS = [_pan_pattern(p) for p in PANS]


def _leaks(text: str, keys: list[str]) -> list[str]:
    """What leaked, named without repeating it: the card's last four, the key's first characters."""
    found = [f"card ...{pan[-4:]}" for pan, p in zip(PANS, PAN_PATTERNS, strict=True) if p.search(text)]
    return found + [f"key {k[:8]}..." for k in keys if k in text]


def _cli(env: dict, *args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "cmp_pipelines.cli", *args], env=env, capture_output=True,
                            text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-2000:])
    return result


def _bad_partner_files(data: Path, keys_dir: Path) -> None:
    """Encrypted partner files carrying card numbers in every kind of field, dropped before `run-pending`."""
    keyring = PartnerKeyring(keys_dir)
    now = datetime.now(UTC)

    def drop(feed: str, partner: str, name: str, plaintext: bytes) -> None:
        folder = data / "inbound" / feed / partner
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(keyring.encrypt(partner, plaintext))

    base = {"account_number": "ACC00000001", "invoice_number": None, "amount": "1.00",
            "payment_date": "2026-11-20T14:03:00Z", "payment_method": "CASH", "reference": None}
    records = [{**base, "record_id": f"S{i}", "reference": typed} for i, typed in enumerate(TYPED, start=1)]
    records += [{**base, "record_id": "4111111111111111"}, {**base, "record_id": "S98", "account_number": PANS[1]},
                {**base, "record_id": "S99", "amount": "5555 5555 5555 4444"}, {**base, "record_id": "S100"}]
    drop("nrp", "PAYPOINT", "PAYPOINT-SECRETS-001.json.enc",
         orjson.dumps(nrp_document("PAYPOINT", "PAYPOINT-SECRETS-001", records, now)))
    drop("nrp", "PAYPOINT", "PAYPOINT-SECRETS-002.json.enc",
         orjson.dumps(nrp_document("PAYPOINT", f"PAYPOINT-{PANS[0]}", [{**base, "record_id": "1"}], now)))
    rejection = {"record_id": "1", "transaction_id": "CTX-UNKNOWN-1", "account_number": "ACC00000001",
                 "amount": "1.00", "reason_code": "05", "reason_text": TYPED[0], "rejected_at": "2026-12-01T09:00:00Z"}
    rejections = [rejection, {**rejection, "record_id": "2", "transaction_id": PANS[1]},
                  {**rejection, "record_id": "3", "reason_text": "Do not honour", "account_number": TYPED[4]}]
    drop("card_rejections", "CARDPAY", "CARDPAY-REJ-SECRETS.json.enc", orjson.dumps({
        "header": {"file_id": "CARDPAY-REJ-SECRETS", "sender": "CARDPAY", "created_at": now.strftime(
            "%Y-%m-%dT%H:%M:%SZ"), "currency": "GBP", "record_count": 3, "total_amount": "3.00"},
        "rejections": rejections}))
    csv = "\n".join([
        "ORDER_REF,LINE_NO,SKU,STATUS,IMEI,SERIAL_NO,COURIER_REF,DISPATCH_DATE,ERROR_TEXT",
        f"SO-UNKNOWN,1,PR-CASE-X1,{TYPED[0]},,CASE-1,DPD,21/11/2026 10:00,",
        f"SO-UNKNOWN,1,PR-CASE-X1,SHIPPED,{PANS[1]},,{TYPED[1]},21/11/2026 10:00,",
        f"SO-UNKNOWN,2,PR-CASE-X1,FAILED,,,,,card {TYPED[4]} declined", ""])
    drop("warehouse_dispatch", "WH_NORTH", "WH_NORTH-DISPATCH-SECRETS.csv.enc", csv.encode())


def _api_attacks(env: dict, port: int, keys: list[str]) -> list[int]:
    """A real `api serve`, and requests carrying keys in URLs and card numbers in every field and header."""
    agent, ivr = keys
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as http:
        as_agent = {"X-API-Key": agent}
        statuses = [
            http.get(f"/v1/accounts/ACC00000001/balance?api_key={agent}").status_code,
            http.get(f"/v1/payments/{ivr}", headers={"X-API-Key": ivr}).status_code,
            http.get("/v1/accounts/4111%201111%201111%201111/balance", headers=as_agent).status_code,
            http.get(f"/v1/accounts/{PANS[1]}/payments?status=PENDING&card={PANS[0]}", headers=as_agent).status_code,
            http.post("/v1/payments", json={"account_number": "ACC00000001", "amount": "1.00", "method": "HOSTED_PAGE"},
                      headers={**as_agent, "Idempotency-Key": TYPED[4].replace(" ", "")}).status_code,
        ]
        for typed in TYPED[:5]:
            statuses.append(http.post("/v1/payments", json={
                "account_number": "ACC00000001", "amount": "1.00", "method": "HOSTED_PAGE", "reference": typed[:40]},
                headers={**as_agent, "Idempotency-Key": secrets.token_urlsafe(18)}).status_code)
            statuses.append(http.put("/v1/accounts/ACC00000001/card", json={
                "card_token": re.sub(r"[^A-Za-z0-9_-]", "_", typed)}, headers=as_agent).status_code)
        statuses.append(http.post("/v1/accounts/ACC00000001/mandates", json={
            "sort_code": "12-34-56", "bank_account": "12345678", "account_name": TYPED[2]},
            headers=as_agent).status_code)
        soap = ('<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
                'xmlns:t="urn:cmp:payment-setup:v1"><soap:Body><t:SetPaymentTypeRequest>'
                "<t:accountNumber>ACC00000001</t:accountNumber><t:paymentType>RECURRING_CARD</t:paymentType>"
                f"<t:cardToken>{TYPED[4]}</t:cardToken></t:SetPaymentTypeRequest></soap:Body></soap:Envelope>")
        statuses.append(http.post("/soap/payment-setup", content=soap.encode(),
                                  headers={"X-API-Key": ivr, "Content-Type": "text/xml"}).status_code)
        hosted = http.post("/v1/payments", json={"account_number": "ACC00000002", "amount": "2.00",
                                                 "method": "HOSTED_PAGE"},
                           headers={**as_agent, "Idempotency-Key": secrets.token_urlsafe(18), "Host": "evil.example"})
        statuses.append(hosted.status_code)
        page = hosted.json()["redirect_url"]
        statuses.append(http.post(page, content=f"card_token={PANS[0]}".encode(),
                                  headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code)
        body = orjson.dumps({"session_id": page.rsplit("/", 1)[1], "status": "SUCCEEDED",
                             "provider_reference": TYPED[1]})
        statuses.append(http.post("/v1/provider/callbacks", content=body, headers={
            SIGNATURE_HEADER: sign(PROVIDER_SECRET.encode(), body), "Content-Type": "application/json"}).status_code)
        statuses.append(http.post(page, content=b"card_token=tok_success",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code)
    return statuses


@pytest.mark.slow
def test_no_card_number_or_key_in_anything_written_after_the_demo_and_the_bad_inputs(tmp_path):
    data = tmp_path / "data"
    env = {**os.environ, "CMP_DATA_DIR": str(data), "DAGSTER_HOME": str(data / "dagster_home"),
           "CMP_PROVIDER_SECRET": PROVIDER_SECRET, "GX_ANALYTICS_ENABLED": "false"}
    env.pop("CMP_KEYS_DIR", None)
    keys_dir = data / "keys"
    outputs: list[str] = []

    def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = _cli(env, *args, check=check)
        outputs.extend([result.stdout, result.stderr])
        return result

    # `make prepare` (hardware demo included) and the bad partner files, then `make demo`'s run-pending
    for args in (["init"], ["keys", "init"], ["demo", "seed", "--accounts", "40", "--seed", "42"], ["demo", "files"],
                 ["demo", "cards"], ["run-card-payments"], ["demo", "card-rejections"], ["demo", "direct-debit"],
                 ["run-auddis"], ["run-dd-collections"], ["demo", "bacs-reports"], ["demo", "orders"],
                 ["demo", "warehouse-dispatch"]):
        cli(*args)
    _bad_partner_files(data, keys_dir)
    pending = cli("run-pending")
    assert "failed" in pending.stdout
    cli("summary")
    refused = cli("accounts", "set-payment-type", "ACC00000003", "RECURRING_CARD", "--card-token",
                  TYPED[4], check=False)
    assert refused.returncode != 0 and "looks like a card number" in refused.stdout + refused.stderr

    # API keys: one written as a hash (as a deployment would), one issued by `api keys init`: shown once
    write_key_hash(keys_dir, "AGENTVIEW", hash_key(AGENT_KEY))
    issued = _cli(env, "api", "keys", "init", "--client", "IVR", "--rotate")
    ivr_key = issued.stdout.strip().split(": ", 1)[1]
    assert issued.stdout.count(ivr_key) == 1 and ivr_key not in issued.stderr
    outputs.append(issued.stderr)
    keys = [AGENT_KEY, ivr_key]
    port = free_port()
    server = serve_api(env, port, 90)
    try:
        statuses = _api_attacks(env, port, keys)
    finally:
        server.terminate()
        outputs.append(server.communicate(timeout=60)[0])
    assert statuses[:5] == [401, 404, 422, 422, 422], statuses
    assert statuses[5:15] == [422] * 10 and statuses[15:17] == [422, 500], statuses
    assert statuses[17:] == [201, 422, 200, 200], statuses  # the callback completes, its reference masked
    cli("run-pending")  # the Ledger Monitor takes the hosted payment to the ledger

    # Everything written: every file (outbound documents decrypted), every table, every output
    leaks: dict[str, list[str]] = {}
    keyring = PartnerKeyring(keys_dir)
    partner_inputs = {"inbound", "archive", "quarantine"}  # the partners' own encrypted files, as they sent them
    checked = 0
    for path in sorted(tmp_path.rglob("*")):
        if not path.is_file():
            continue
        raw = path.read_bytes()
        texts = [raw.decode("utf-8", "ignore"), raw.decode("utf-16-le", "ignore")]
        relative = path.relative_to(tmp_path)
        if path.suffix == ".enc" and not partner_inputs & set(relative.parts):
            partner = relative.parts[-2] if len(relative.parts) > 2 else ""
            try:
                texts.append(keyring.decrypt(partner, raw).decode("utf-8", "ignore"))
            except Exception:  # noqa: BLE001  (a document for a partner folder named otherwise: tried below)
                texts.extend(_decrypt_any(keyring, keys_dir, raw))
        for text in texts:
            found = _leaks(text, keys)
            if found:
                leaks[str(relative)] = found
        checked += 1
    with duckdb.connect(str(data / "cmp.duckdb"), read_only=True) as con:
        tables = [t for (t,) in con.execute("SELECT table_name FROM information_schema.tables "
                                            "WHERE table_schema = 'main' AND table_type = 'BASE TABLE'").fetchall()]
        for table in tables:
            result = con.execute(f'SELECT * FROM "{table}"')
            names = [d[0] for d in result.description]
            for row in result.fetchall():
                for name, value in zip(names, row, strict=True):
                    found = _leaks(str(value), keys)
                    if found:
                        leaks[f"cmp.duckdb:{table}.{name}"] = found
    for index, output in enumerate(outputs):
        found = _leaks(output, keys)
        if found:
            leaks[f"output {index}"] = found
    assert checked > 50 and len(tables) > 20
    assert leaks == {}


def _decrypt_any(keyring: PartnerKeyring, keys_dir: Path, token: bytes) -> list[str]:
    for partner in sorted(p.name.removesuffix(".keys") for p in keys_dir.glob("*.keys")):
        try:
            return [keyring.decrypt(partner, token).decode("utf-8", "ignore")]
        except Exception:  # noqa: BLE001, S112
            continue
    return []
