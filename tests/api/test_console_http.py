"""The Business Configuration console through HTTP on the real server: sign-in with an API key, security levels
(VIEW_CONFIG, EDIT_CONFIG: 403 naming the rule), CSRF, the loaders' validation shown beside the field, a save
written to the YAML the flows load (comments kept) and audited, a concurrent edit refused; /docs offline."""

from __future__ import annotations

import re

import httpx

from cmp_pipelines.core.config import load_payment_terms, load_rejection_codes
from tests.support.api import KEYS
from tests.support.console import csrf, etag, signed_in

RULE = "API client AGENTVIEW (security level AGENT) may not EDIT_CONFIG: config/security.yaml allows SUPERVISOR, ADMIN"


def test_sign_in_levels_and_csrf(console):
    api, _ = console
    with httpx.Client(base_url=api.base_url, timeout=10) as anonymous:
        redirected = anonymous.get("/console/payment-terms")
        assert redirected.headers["location"] == "/console/login?next=/console/payment-terms"
        page = anonymous.get("/console/login")
        bad = anonymous.post("/console/login", data={"csrf": csrf(page.text), "api_key": "not-a-key"})
        assert bad.status_code == 401 and "the API key is not valid" in bad.text
        forged = anonymous.post("/console/login", data={"csrf": "0" * 64, "api_key": "x"})
        assert forged.status_code == 403 and "security token is missing or stale" in forged.text
        with_key_header = anonymous.get("/console/payment-terms", headers={"X-API-Key": KEYS["AGENTVIEW"]})
        assert with_key_header.status_code == 303  # the console takes a signed-in session, not a key per request

    with signed_in(api.base_url, "SELFCARE_APP") as customer:
        refused = customer.get("/console/payment-terms")
    assert refused.status_code == 403
    assert ("API client SELFCARE_APP (security level CUSTOMER) may not VIEW_CONFIG: config/security.yaml allows "
            "AGENT, SUPERVISOR, ADMIN") in refused.text

    with signed_in(api.base_url, "AGENTVIEW") as agent:
        listed = agent.get("/console/payment-terms")
        assert listed.status_code == 200 and "Within 14 days of invoice" in listed.text
        assert listed.headers["content-security-policy"].startswith("default-src 'self'")
        assert (agent.get("/console/payment-terms/D14/edit").status_code, RULE in agent.get(
            "/console/payment-terms/new").text) == (403, True)
        token = csrf(agent.get("/console/payment-terms").text)
        posted = agent.post("/console/payment-terms/new", data={"csrf": token, "code": "D60",
                                                                 "description": "x", "days_to_pay": "60"})
        assert posted.status_code == 403 and RULE in posted.text
        missing = agent.get("/console/rejection-codes/ZZ")
        assert missing.status_code == 404 and "Recurring payment rejection codes: no entry &#39;ZZ&#39;" in missing.text
        assert agent.get("/console/currencies").status_code == 404
        cookie = agent.cookies["cmp_console"]
        signed_out = agent.post("/console/logout", data={"csrf": token})
        assert (signed_out.status_code, signed_out.headers["location"]) == (303, "/console/login")
        assert agent.get("/console/payment-terms").status_code == 303  # the cookie is gone
    with httpx.Client(base_url=api.base_url, timeout=10, cookies={"cmp_console": cookie}) as copied:
        assert copied.get("/console/payment-terms").status_code == 303  # and a copy of it no longer opens anything


def test_a_form_without_its_session_token_changes_nothing(console):
    api, config_dir = console
    shipped = (config_dir / "payment_terms.yaml").read_text()
    with signed_in(api.base_url, "BACKOFFICE") as backoffice:
        form = backoffice.get("/console/payment-terms/D7/edit").text
        with signed_in(api.base_url, "BACKOFFICE") as other_session:
            other = other_session.get("/console/payment-terms/D7/edit").text
        body = {"etag": etag(form), "code": "D7", "description": "Forged", "days_to_pay": "1"}
        for token in ("", csrf(other)):  # none, or another session's
            forged = backoffice.post("/console/payment-terms/D7/edit", data={**body, "csrf": token})
            assert forged.status_code == 403 and "security token is missing or stale" in forged.text
    assert (config_dir / "payment_terms.yaml").read_text() == shipped


def test_add_validate_edit_audit_and_conflict(console):
    api, config_dir = console
    shipped = (config_dir / "payment_terms.yaml").read_text()
    with signed_in(api.base_url, "BACKOFFICE") as backoffice:
        form = backoffice.get("/console/payment-terms/new").text
        bad = backoffice.post("/console/payment-terms/new", data={
            "csrf": csrf(form), "code": "d60", "description": "Within sixty days of the invoice date",
            "days_to_pay": "sixty"})
        assert bad.status_code == 422
        assert re.search(r'id="error-code">must be 1-3 upper-case letters or digits<', bad.text)
        assert re.search(r'id="error-description">must be 1-30 characters, got 37<', bad.text)
        assert "id=\"error-days_to_pay\">must be an integer, got &#39;sixty&#39;<" in bad.text
        assert 'value="Within sixty days of the invoice date"' in bad.text  # what was typed is kept
        assert (config_dir / "payment_terms.yaml").read_text() == shipped  # nothing written

        duplicate = backoffice.post("/console/payment-terms/new", data={
            "csrf": csrf(form), "code": "D14", "description": "Again", "days_to_pay": "14"})
        assert duplicate.status_code == 409 and "code D14 already exists in payment_terms.yaml" in duplicate.text

        added = backoffice.post("/console/payment-terms/new", data={
            "csrf": csrf(form), "code": "D60", "description": "Within 60 days <b>net</b>", "days_to_pay": "60"})
        assert (added.status_code, added.headers["location"]) == (303, "/console/payment-terms/D60?saved=1")
        view = backoffice.get(added.headers["location"]).text
        assert "Within 60 days &lt;b&gt;net&lt;/b&gt;" in view and "<b>net</b>" not in view  # autoescaped

        # The flows' loader sees it; every comment and every other entry of the file is unchanged.
        assert load_payment_terms(config_dir).terms["D60"].days_to_pay == 60
        written = (config_dir / "payment_terms.yaml").read_text()
        assert written.replace('  - {code: "D60", description: Within 60 days <b>net</b>, days_to_pay: 60}\n', "") \
            == shipped

        # A default may only name an existing term: the loader's own rule, beside the field.
        defaults = backoffice.get("/console/payment-term-defaults/DIRECT_DEBIT/edit").text
        wrong = backoffice.post("/console/payment-term-defaults/DIRECT_DEBIT/edit", data={
            "csrf": csrf(defaults), "etag": etag(defaults), "payment_type": "DIRECT_DEBIT", "code": "D99",
            "security_levels": ["SUPERVISOR"]})
        assert wrong.status_code == 422 and "is not a payment term; known: D14, D30, D60, D7, IMM" in wrong.text
        moved = backoffice.post("/console/payment-term-defaults/DIRECT_DEBIT/edit", data={
            "csrf": csrf(defaults), "etag": etag(defaults), "payment_type": "DIRECT_DEBIT", "code": "D60",
            "security_levels": ["SUPERVISOR", "ADMIN"]})
        assert moved.status_code == 303, moved.text
        assert load_payment_terms(config_dir).default_for("DIRECT_DEBIT").code == "D60"

        # Two people open the same rejection code; the second save is refused with the values now saved.
        first = backoffice.get("/console/rejection-codes/05/edit").text
        second = backoffice.get("/console/rejection-codes/05/edit").text
        fields = {"decline": "SOFT", "reason_type": "CARD_DECLINE", "reason_code": "DO_NOT_HONOUR", "code": "05",
                  "retries": "4", "suspension_days": "3", "retry_event.type": "RECURRING_PAYMENT",
                  "retry_event.code": "CARD_SOFT_DECLINE", "cancellation_event.type": "RECURRING_PAYMENT",
                  "cancellation_event.code": "CARD_PAYMENT_CANCELLED"}
        saved = backoffice.post("/console/rejection-codes/05/edit", data={
            **fields, "csrf": csrf(first), "etag": etag(first), "description": "Do not honour (retry 4)"})
        assert saved.status_code == 303, saved.text
        late = backoffice.post("/console/rejection-codes/05/edit", data={
            **fields, "csrf": csrf(second), "etag": etag(second), "description": "Overwrite"})
        assert late.status_code == 409 and "was changed by someone else since you opened it" in late.text
        assert 'value="Do not honour (retry 4)"' in late.text
        hard_with_retries = backoffice.post("/console/rejection-codes/05/edit", data={
            **fields, "csrf": csrf(late.text), "etag": etag(late.text), "description": "x", "decline": "HARD"})
        assert hard_with_retries.status_code == 422
        assert 'id="error-retries">a hard decline is never retried; remove this field<' in hard_with_retries.text
        code = load_rejection_codes(config_dir).codes["05"]
        assert (code.description, code.retries) == ("Do not honour (retry 4)", 4)

        changes = backoffice.get("/console/changes").text
    rows = re.findall(r"<tr><td>(\d+)</td><td>[^<]+</td><td>([^<]+)</td>\s*<td>([^<]+)</td><td>([^<]+)</td>"
                      r"<td>(\w+)</td><td>([^<]*)</td>", changes)
    assert rows == [
        ("3", "API client BACKOFFICE (SUPERVISOR)", "rejection_codes.yaml: rejection_codes", "05", "EDIT",
         "description, retries"),
        ("2", "API client BACKOFFICE (SUPERVISOR)", "payment_terms.yaml: payment_term_defaults", "DIRECT_DEBIT",
         "EDIT", "code"),
        ("1", "API client BACKOFFICE (SUPERVISOR)", "payment_terms.yaml: payment_terms", "D60", "ADD",
         "code, days_to_pay, description")]


def test_docs_are_served_offline(console):
    api, _ = console
    with httpx.Client(base_url=api.base_url, timeout=10) as http:
        docs = http.get("/docs").text
        redoc = http.get("/redoc").text
        for page in (docs, redoc):
            assert re.findall(r"(?:https?:)?//[a-z0-9.-]+", page, re.I) == []  # no host but this server
        for asset in re.findall(r'(?:src|href)="(/docs-assets/[^"]+)"', docs + redoc):
            answer = http.get(asset)
            assert answer.status_code == 200 and len(answer.content) > 1000, asset
        bundle = http.get("/docs-assets/swagger-ui-bundle.js").text
    assert "SwaggerUIBundle" in bundle
    assert '"validatorUrl": "none"' in docs  # Swagger UI's default would fetch a badge from validator.swagger.io
