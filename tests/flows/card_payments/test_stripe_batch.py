"""The Stripe adapter of the recurring card extract (core/stripe_batch.py) against the local Stripe stub: the day's
generic extract charged off-session, one idempotency key per record, a timeout and a 503 retried without a second
charge, declines and an SCA card written back as OUR card rejection file, which the card rejections flow takes
unchanged: the ledger exact to the penny."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest

from cmp_pipelines.core import payment_setup
from cmp_pipelines.core.config import load_partners, load_rejection_codes
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.core.stripe_batch import ExtractError, run_stripe_batch
from cmp_pipelines.core.stripe_provider import StripeProvider, StripeSettings
from cmp_pipelines.defs.nrp.flow import partition_key, sha256_hex
from tests.support.platform import NOW
from tests.support.stripe_stub import running_stub

CARDS = {  # account -> Stripe test payment method, and what the batch must make of it
    "ACC00000001": ("pm_card_visa", "SUCCEEDED", None),
    "ACC00000002": ("pm_card_chargeDeclinedInsufficientFunds", "DECLINED", "51"),  # soft
    "ACC00000003": ("pm_card_chargeDeclinedLostCard", "DECLINED", "41"),  # hard
    "ACC00000004": ("pm_card_authenticationRequired", "DECLINED", "65"),  # SCA: nobody to authenticate
    "ACC00000005": ("pm_card_threeDSecureRequired", "DECLINED", "65"),
    "ACC00000006": ("pm_timeout", "SUCCEEDED", None),  # answered after the client gave up: retried, same key
    "ACC00000007": ("pm_card_unavailableOnce", "SUCCEEDED", None),  # a 503, then the retry goes through
    "ACC00000008": ("pm_server_error", "UNRESOLVED", None),  # 500 every time, never reached Stripe's ledger
}


@pytest.fixture
def stripe_api(tmp_path):
    with running_stub() as stub:
        yield provider_for(stub, tmp_path), stub


def provider_for(stub, tmp_path) -> StripeProvider:
    config = load_payment_config()
    settings = StripeSettings(api_key="sk_test_batch", webhook_secret="whsec_batch", decline_codes=config.decline_codes,
                              default_decline_code=config.default_decline_code, success_url="https://x.test/ok",
                              cancel_url="https://x.test/no", api_base=stub.url, timeout_seconds=1.0)
    reasons = {code: c.description for code, c in load_rejection_codes(PROJECT_ROOT / "config").card_codes.items()}
    return StripeProvider(settings, reasons, tmp_path / "stripe_state.sqlite")


def load_payment_config():
    from cmp_pipelines.core.config_payments import load_provider_settings

    return load_provider_settings(PROJECT_ROOT / "config").stripe


def card_day(platform, cards: dict = CARDS) -> tuple[str, dict[str, int]]:
    """The accounts of CARDS on recurring card (Stripe customer and payment method), their invoices due today,
    the day's CARD extract written; returns the extract's path and what each account owed."""
    day = NOW.date()
    partners = load_partners(PROJECT_ROOT / "config")
    with platform.connect() as con:
        for n, (account, (method, _, _)) in enumerate(cards.items()):
            payment_setup.set_payment_type(con, account, "RECURRING_CARD", partners=partners, now=NOW, cause="test",
                                           card_token=f"cus_Batch{n}-{method}", last_four="4242", expiry="2031-01")
        con.execute(f"UPDATE invoices SET due_on = ? WHERE account_number IN ({', '.join('?' * len(cards))})",
                    [day, *cards])
        owed = dict(con.execute(
            "SELECT account_number, sum(amount_minor) FROM invoices WHERE account_number IN "
            f"({', '.join('?' * len(cards))}) GROUP BY 1", list(cards)).fetchall())
    platform.card_day(day)
    return f"outbound/card_payments/CARDPAY/RCX-{day:%Y%m%d}-CARDPAY-GBP.json.enc", owed


def test_an_extract_charged_at_stripe_and_its_declines_through_the_rejections_flow(platform, stripe_api):
    provider, stub = stripe_api
    extract_path, owed = card_day(platform)
    extract = orjson.loads(platform.keyring.decrypt("CARDPAY", platform.files.read_bytes(extract_path)))
    records = extract["transactions"]
    assert {t["account_number"] for t in records} == set(CARDS) and all(platform.balance(a) == 0 for a in CARDS)

    result = run_stripe_batch(platform.files, platform.keyring, extract_path, provider, partner="CARDPAY", now=NOW,
                              sleep=lambda _: None)

    assert {t["transaction_id"]: result.outcomes[t["transaction_id"]] for t in records} == {
        t["transaction_id"]: CARDS[t["account_number"]][1] for t in records}
    keys = [r["headers"]["idempotency-key"] for r in stub.requests if r["path"] == "/v1/payment_intents"]
    assert set(keys) == {f"charge-{t['transaction_id']}" for t in records}
    for t in records:  # the timeout and the 5xx retried with the same key; a 503 once, then through
        tries = {"ACC00000006": 2, "ACC00000007": 2, "ACC00000008": 3}.get(t["account_number"], 1)
        assert keys.count(f"charge-{t['transaction_id']}") == tries, t
    # one PaymentIntent per record that reached Stripe: the retries charged nobody twice
    made = sorted(i["metadata"]["merchant_reference"] for i in stub.intents.values())
    assert made == sorted(t["transaction_id"] for t in records if t["account_number"] != "ACC00000008")
    assert sum(i["amount_received"] for i in stub.intents.values()) == sum(
        owed[a] for a, (_, outcome, _) in CARDS.items() if outcome == "SUCCEEDED")

    rejections = orjson.loads(platform.keyring.decrypt("CARDPAY", platform.files.read_bytes(result.rejection_path)))
    declined = {a: code for a, (_, outcome, code) in CARDS.items() if outcome == "DECLINED"}
    assert {r["account_number"]: r["reason_code"] for r in rejections["rejections"]} == declined
    declined_records = [t for t in records if t["account_number"] in declined]
    assert sorted(r["transaction_id"] for r in rejections["rejections"]) == sorted(
        t["transaction_id"] for t in declined_records)
    assert rejections["header"]["record_count"] == len(declined_records) >= 4
    assert rejections["header"]["total_amount"] == f"{sum(owed[a] for a in declined) / 100:.2f}"
    report = orjson.loads(platform.files.read_bytes(result.report_path))
    assert report["counts"] == {o: sum(1 for t in records if CARDS[t["account_number"]][1] == o)
                                for o in ("DECLINED", "SUCCEEDED", "UNRESOLVED")}

    name = result.rejection_path.rsplit("/", 1)[1]
    key = partition_key("CARDPAY", name, sha256_hex(platform.files.read_bytes(result.rejection_path)))
    load, applied = platform.process_rejections(key)

    assert load.record_count == applied.posting_count == len(declined_records)
    for account, (_, outcome, _) in CARDS.items():  # a decline owes its invoice again, to the penny
        assert platform.balance(account) == (owed[account] if outcome == "DECLINED" else 0), account
    assert platform.query(
        "SELECT account_number, payment_type FROM accounts WHERE account_number IN ('ACC00000002', 'ACC00000003') "
        "ORDER BY 1") == [("ACC00000002", "RECURRING_CARD"), ("ACC00000003", "MANUAL")]  # soft kept, hard reverted


def test_running_the_adapter_again_charges_nobody_twice(platform, stripe_api):
    provider, stub = stripe_api
    extract_path, _ = card_day(platform)
    first = run_stripe_batch(platform.files, platform.keyring, extract_path, provider, partner="CARDPAY", now=NOW,
                             sleep=lambda _: None)
    intents = len(stub.intents)
    again = run_stripe_batch(platform.files, platform.keyring, extract_path, provider, partner="CARDPAY", now=NOW,
                             sleep=lambda _: None)
    assert again.outcomes == first.outcomes and len(stub.intents) == intents
    assert platform.files.read_bytes(again.rejection_path) != b""


def test_a_tampered_extract_is_refused_with_the_reason_and_charges_nothing(platform, stripe_api):
    provider, stub = stripe_api
    extract_path, _ = card_day(platform)
    document = orjson.loads(platform.keyring.decrypt("CARDPAY", platform.files.read_bytes(extract_path)))
    document["transactions"][0]["amount"] = "999.99"
    platform.files.write_bytes(extract_path, platform.keyring.encrypt("CARDPAY", orjson.dumps(document)))
    with pytest.raises(ExtractError, match=r"RCX-.*header says \d+ records for [0-9.]+, the file holds \d+ for "):
        run_stripe_batch(platform.files, platform.keyring, extract_path, provider, partner="CARDPAY", now=NOW)
    document["transactions"][0]["amount"] = 12.5
    platform.files.write_bytes(extract_path, platform.keyring.encrypt("CARDPAY", orjson.dumps(document)))
    with pytest.raises(ExtractError, match=r"transactions\.0\.amount: 12\.5 is not of type 'string'"):
        run_stripe_batch(platform.files, platform.keyring, extract_path, provider, partner="CARDPAY", now=NOW)
    assert stub.requests == []


def test_the_command_charges_an_extract_and_says_where_the_rejection_file_is(platform, stripe_api, monkeypatch):
    from click.testing import CliRunner

    from cmp_pipelines.cli.main import main

    _, stub = stripe_api
    cards = {a: CARDS[a] for a in ("ACC00000001", "ACC00000003")}
    extract_path, owed = card_day(platform, cards)
    monkeypatch.setenv("CMP_STRIPE_SECRET_KEY", "sk_test_cli")
    monkeypatch.setenv("CMP_STRIPE_WEBHOOK_SECRET", "whsec_cli")
    monkeypatch.setenv("CMP_STRIPE_API_BASE", stub.url)
    answer = CliRunner().invoke(main, ["files", "stripe-batch", extract_path, "--partner", "CARDPAY"])
    assert answer.exit_code == 0, answer.output
    lines = answer.output.splitlines()
    extract = orjson.loads(platform.keyring.decrypt("CARDPAY", platform.files.read_bytes(extract_path)))
    per = {a: sum(1 for t in extract["transactions"] if t["account_number"] == a) for a in cards}
    assert lines[0] == f"{extract['header']['file_id']}: {per['ACC00000003']} declined, {per['ACC00000001']} succeeded"
    assert lines[1].startswith("rejection file: ") and "inbound/card_rejections/CARDPAY/RCX-" in lines[1]
    document = orjson.loads(platform.keyring.decrypt("CARDPAY", platform.files.read_bytes(lines[1].split(": ")[1])))
    assert {r["account_number"] for r in document["rejections"]} == {"ACC00000003"}
    assert document["header"]["total_amount"] == f"{owed['ACC00000003'] / 100:.2f}"
    missing = CliRunner().invoke(main, ["files", "stripe-batch", "outbound/card_payments/CARDPAY/none.json.enc"])
    assert missing.exit_code != 0 and "none.json.enc" in missing.output


def test_refunds_go_back_to_the_customers_payment_and_an_impossible_one_is_rejected(platform, stripe_api):
    provider, stub = stripe_api
    cards = {"ACC00000001": CARDS["ACC00000001"]}
    first_extract, owed = card_day(platform, cards)
    run_stripe_batch(platform.files, platform.keyring, first_extract, provider, partner="CARDPAY", now=NOW,
                     sleep=lambda _: None)
    assert platform.balance("ACC00000001") == 0
    day = NOW.date() + timedelta(days=1)
    with platform.connect() as con:  # a goodwill credit, and one larger than anything the customer paid
        for refund_id, amount in (("RFB-1", 500), ("RFB-2", owed["ACC00000001"] + 1)):
            con.execute("INSERT INTO card_refunds VALUES (?, 'ACC00000001', ?, 'GBP', ?, 'test', ?)",
                        [refund_id, amount, day, NOW])
    platform.card_day(day)
    extract_path = f"outbound/card_payments/CARDPAY/RCX-{day:%Y%m%d}-CARDPAY-GBP.json.enc"
    assert platform.balance("ACC00000001") == 500 + owed["ACC00000001"] + 1  # refunds posted as if made

    result = run_stripe_batch(platform.files, platform.keyring, extract_path, provider, partner="CARDPAY", now=NOW,
                              sleep=lambda _: None)

    assert result.outcomes == {"RRFB-1-1": "SUCCEEDED", "RRFB-2-1": "DECLINED"}
    [refund] = [r for r in stub.requests if r["path"] == "/v1/refunds"]
    assert refund["headers"]["idempotency-key"] == "refund-RRFB-1-1" and refund["params"]["amount"] == "500"
    assert stub.refunded == {next(iter(stub.intents)): 500}
    [rejected] = result.rejections
    assert (rejected["transaction_id"], rejected["reason_code"]) == ("RRFB-2-1", "57")
    assert rejected["reason_text"] == f"no payment of at least {owed['ACC00000001'] + 1} GBP at Stripe to refund"
    name = result.rejection_path.rsplit("/", 1)[1]
    load, applied = platform.process_rejections(
        partition_key("CARDPAY", name, sha256_hex(platform.files.read_bytes(result.rejection_path))))
    assert applied.posting_count == 1
    assert platform.balance("ACC00000001") == 500  # the refund not made is reversed; the one made stands


def test_when_the_retries_run_out_stripe_is_asked_and_the_unknown_stays_unresolved(platform, stripe_api):
    provider, stub = stripe_api
    extract_path, owed = card_day(platform, {a: CARDS[a] for a in ("ACC00000006", "ACC00000008")})
    result = run_stripe_batch(platform.files, platform.keyring, extract_path, provider, partner="CARDPAY", now=NOW,
                              attempts=1, sleep=lambda _: None)
    at_stripe = {i["metadata"]["merchant_reference"] for i in stub.intents.values()}
    timed_out = {t for t in result.outcomes if t in at_stripe}
    assert timed_out and {result.outcomes[t] for t in timed_out} == {"SUCCEEDED"}  # found by the search
    assert {o for t, o in result.outcomes.items() if t not in timed_out} == {"UNRESOLVED"}
    searches = [r for r in stub.requests if r["path"] == "/v1/payment_intents/search"]
    assert len(searches) == len(result.outcomes)
    assert result.rejection_path is None and result.rejections == []  # nothing unknown is ever rejected
    assert all(platform.balance(a) == 0 for a in owed)  # so every payment stays posted as taken
