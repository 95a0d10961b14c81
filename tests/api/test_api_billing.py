"""The billing API over real HTTP: create or change an account, issue an invoice (due date from the payment term,
posted once, Idempotency-Key), security levels from configuration, problem+json refusals, and the hardware charges
waiting for the account's next invoice."""

from __future__ import annotations

from datetime import date

from tests.support.hardware import shipped

NEW = "ACC00000961"


def test_an_account_is_created_then_changed(api):
    office = api.client("BACKOFFICE")
    created = office.put(f"/v1/accounts/{NEW}", json={"name": "Ada Lovelace", "email": "ada@example.com",
                                                      "payment_term": "D7"})
    assert created.status_code == 201, created.text
    assert created.headers["Location"] == f"/v1/accounts/{NEW}"
    assert created.json() == {"account_number": NEW, "name": "Ada Lovelace", "currency": "GBP", "status": "ACTIVE",
                              "payment_type": "MANUAL", "payment_term": "D7", "email": "ada@example.com",
                              "phone": None}
    changed = api.client("AGENTVIEW").put(f"/v1/accounts/{NEW}", json={"name": "Ada King", "phone": "+447700900123"})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["name"], changed.json()["payment_term"], changed.json()["email"],
            changed.json()["phone"]) == ("Ada King", "D7", "ada@example.com", "+447700900123")
    plain = api.client("AGENTVIEW").put("/v1/accounts/ACC00000962", json={"name": "Default Term"})
    assert plain.status_code == 201 and plain.json()["payment_term"] == "D14", "the MANUAL payment term default"
    assert api.platform.query("SELECT name, payment_term FROM accounts WHERE account_number = ?", [NEW]) == [
        ("Ada King", "D7")]


def test_account_calls_are_refused_with_the_rule_or_the_field(api):
    customer = api.client("SELFCARE_APP").put(f"/v1/accounts/{NEW}", json={"name": "Me"})
    assert customer.status_code == 403
    assert customer.headers["content-type"] == "application/problem+json"
    assert customer.json()["detail"] == ("API client SELFCARE_APP (security level CUSTOMER) may not CREATE_ACCOUNT: "
                                         "config/security.yaml allows AGENT, SUPERVISOR, ADMIN")
    office = api.client("BACKOFFICE")
    term = office.put(f"/v1/accounts/{NEW}", json={"name": "X", "payment_term": "Z9"})
    assert term.status_code == 422 and term.json()["field"] == "payment_term"
    assert term.json()["detail"] == ("payment_term: 'Z9' is not a payment term of the Payments module "
                                     "(known: D14, D30, D7, IMM)")
    email = office.put(f"/v1/accounts/{NEW}", json={"name": "X", "email": "nope"})
    assert (email.status_code, email.json()["field"]) == (422, "email")
    currency = office.put("/v1/accounts/ACC00000001", json={"name": "X", "currency": "EUR"})
    assert currency.status_code == 422
    assert currency.json()["detail"] == "currency: account ACC00000001 is in GBP; its currency cannot change"
    card = office.put(f"/v1/accounts/{NEW}", json={"name": "4111 1111 1111 1111"})
    assert card.status_code == 422 and "4111 1111 1111 1111" not in card.text
    assert api.platform.query("SELECT count(*) FROM accounts WHERE account_number = ?", [NEW]) == [(0,)]


def _invoice(http, number="INV-API-1", amount="45.00", issue_date="2026-12-01", account="ACC00000005",
             key="invoice-key-1"):
    return http.post(f"/v1/accounts/{account}/invoices", headers={"Idempotency-Key": key},
                     json={"invoice_number": number, "amount": amount, "issue_date": issue_date})


def test_an_invoice_is_due_after_the_payment_term_posted_once_and_replayed_by_its_key(api):
    office = api.client("BACKOFFICE")
    assert office.put("/v1/accounts/ACC00000005", json={"name": "Five", "payment_term": "D30"}).status_code == 200
    before = api.platform.balance("ACC00000005")

    issued = _invoice(office)

    assert issued.status_code == 201, issued.text
    assert issued.json() == {"invoice_number": "INV-API-1", "account_number": "ACC00000005",
                             "issue_date": "2026-12-01", "due_date": "2026-12-31", "amount": "45.00",
                             "currency": "GBP", "hardware_charges": [], "total_due": "45.00"}
    again = _invoice(office)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == issued.json()
    other_body = _invoice(office, amount="46.00")
    assert other_body.status_code == 409
    assert other_body.json()["detail"] == ("Idempotency-Key: Idempotency-Key was already used for invoice INV-API-1 "
                                           "with a different body; use a new key for a new invoice")
    reissued = _invoice(office, key="invoice-key-2")
    assert reissued.status_code == 409 and reissued.json()["detail"] == (
        "invoice_number: invoice INV-API-1 was already issued (to account ACC00000005); an invoice is issued once")
    assert api.platform.balance("ACC00000005") == before + 4500
    assert api.platform.query("SELECT idempotency_key, amount_minor FROM ledger_postings "
                              "WHERE invoice_number = 'INV-API-1'") == [("invoice:INV-API-1:CHARGE", 4500)]
    assert api.platform.query("SELECT due_on FROM invoices WHERE invoice_number = 'INV-API-1'") == [
        (date(2026, 12, 31),)]


def test_invoice_calls_are_refused_with_the_rule_or_the_field(api):
    agent = _invoice(api.client("AGENTVIEW"))
    assert agent.status_code == 403 and agent.json()["detail"] == (
        "API client AGENTVIEW (security level AGENT) may not ISSUE_INVOICE: config/security.yaml allows "
        "SUPERVISOR, ADMIN")
    office = api.client("BACKOFFICE")
    amount = _invoice(office, amount="4.5")
    assert (amount.status_code, amount.json()["field"]) == (422, "amount")
    assert amount.json()["detail"] == "amount: '4.5' is not an amount such as 12.34 (0.00 or more, two places)"
    day = _invoice(office, issue_date="2026-02-30")
    assert (day.status_code, day.json()["field"]) == (422, "issue_date")
    unknown = _invoice(office, account="ACC99999999")
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "account_number: account ACC99999999 does not exist"
    no_key = office.post("/v1/accounts/ACC00000005/invoices",
                         json={"invoice_number": "INV-X", "amount": "1.00", "issue_date": "2026-12-01"})
    assert no_key.status_code == 422
    assert api.platform.query("SELECT count(*) FROM invoices WHERE invoice_number LIKE 'INV-API-%'") == [(0,)]


def test_an_invoice_issued_through_the_api_takes_the_pending_hardware_charges_once(api, hardware):
    account = "ACC00000020"
    order = hardware.order(account, [("LC-MDM-12M", 1)], billing="NEXT_INVOICE")
    hardware.request()
    hardware.dispatch(hardware.drop_dispatch("WH_NORTH", "n.csv.enc", [shipped(order, 1, "LC-MDM-12M", "L-1")]))
    before = api.platform.balance(account)
    office = api.client("BACKOFFICE")

    first = _invoice(office, number="INV-API-HW", amount="10.00", account=account)
    assert first.status_code == 201, first.text
    assert first.json()["hardware_charges"] == [{"order_id": order, "amount": "60.00"}]
    assert first.json()["total_due"] == "70.00"
    second = _invoice(office, number="INV-API-HW2", amount="10.00", account=account, key="invoice-key-2")
    assert second.json()["hardware_charges"] == []
    assert api.platform.balance(account) == before + 1000 + 6000 + 1000
    assert hardware.hardware_charges(account) == 6000
    assert hardware.view(order)["billed"] == [{"kind": "INVOICED INV-API-HW", "amount": "60.00"}]
