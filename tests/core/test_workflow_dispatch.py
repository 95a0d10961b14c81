"""Workflow actions and customer communications against a real SMTP server on loopback: the right recipient,
subject and body; a refusing server retried and the message delivered once; duplicate dispatcher runs sending
nothing twice; webhooks and operator tasks; every event the flows raise has an action."""

from __future__ import annotations

import shutil
import threading
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from cmp_pipelines.core import notices, outbox, workflow
from cmp_pipelines.core.config import check_config_dir, load_mandate_revision_codes, load_rejection_codes
from cmp_pipelines.core.config_payments import load_provider_settings
from cmp_pipelines.core.config_workflow import load_workflow_actions
from cmp_pipelines.core.dispatcher import run_dispatcher
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.core.templates import Templates
from tests.support.platform import add_customer, extract_ids, rejection, rejections_document
from tests.support.smtp import html_of, text_of

CONFIG = PROJECT_ROOT / "config"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def dispatch(platform, now=T0) -> dict:
    with platform.connect() as con:
        return run_dispatcher(con, CONFIG, outbox.SmtpSettings.from_env(), now)


def raise_event(platform, event_type: str, code: str, account: str | None, source_ref: str, detail: str) -> int:
    with platform.connect() as con:
        con.execute("INSERT INTO workflow_events (event_type, event_code, account_number, source_ref, detail, "
                    "raised_at) VALUES (?, ?, ?, ?, ?, ?)", [event_type, code, account, source_ref, detail, T0])
        return con.execute("SELECT max(event_id) FROM workflow_events").fetchone()[0]


def soft_decline(platform) -> tuple[str, str, int]:
    """A real card soft decline through the card flows: (account, transaction id, event id)."""
    account = add_customer(platform, 901, [("INV900000001", 2500, date(2026, 12, 1))])
    with platform.connect() as con:
        con.execute("UPDATE accounts SET email = 'pat@example.org', name = 'Pat <Smith> & Co' "
                    "WHERE account_number = ?", [account])
    platform.card_day(date(2026, 12, 1))
    [transaction] = extract_ids(platform, date(2026, 12, 1))
    key = platform.drop_rejections("rej-1.json.enc", rejections_document(
        [rejection("1", transaction, account, "25.00", "05")]))
    platform.process_rejections(key, now=T0)
    [(event_id,)] = platform.query("SELECT event_id FROM workflow_events WHERE event_code = 'CARD_SOFT_DECLINE'")
    return account, transaction, event_id


def test_every_event_the_flows_raise_has_an_action_and_its_template_renders():
    from cmp_pipelines.defs.card_rejections.rules import UNCONFIGURED_EVENT as CARD_UNKNOWN
    from cmp_pipelines.defs.direct_debit.arudd_rules import UNCONFIGURED_EVENT as DD_UNKNOWN
    from cmp_pipelines.defs.direct_debit.auddis import MANDATE_SETUP_EVENT
    from cmp_pipelines.defs.hardware_orders.rules import (
        ENROLMENT_FAILED_EVENT,
        FRAUD_FAILED_EVENT,
        ORDER_ERROR_EVENT,
    )

    raised = {CARD_UNKNOWN, DD_UNKNOWN, MANDATE_SETUP_EVENT, ENROLMENT_FAILED_EVENT, FRAUD_FAILED_EVENT,
              ORDER_ERROR_EVENT, *((notices.EVENT_TYPE, code) for _, code in notices.KINDS.values())}
    for code in load_rejection_codes(CONFIG).codes.values():
        raised |= {(e.event_type, e.event_code) for e in (code.retry_event, code.cancellation_event,
                                                          code.refund_event) if e}
    raised |= {(c.event.event_type, c.event.event_code) for c in load_mandate_revision_codes(CONFIG).values()}
    failure = load_provider_settings(CONFIG).failure_event
    raised.add((failure.event_type, failure.event_code))
    actions = load_workflow_actions(CONFIG)
    templates = Templates(CONFIG / "templates")
    missing = sorted(f"{t}/{c}" for t, c in raised if actions.action_for(t, c) is None)
    assert missing == []
    assert len(raised) == 20
    for event_type, code in raised:
        action = actions.action_for(event_type, code)
        if action.action == "COMMUNICATION":
            for new_type in (None, "MANUAL", "RECURRING_CARD", "DIRECT_DEBIT"):  # what the event moved it to
                row = {"event_id": 1, "event_type": event_type, "event_code": code, "account_number": "ACC1",
                       "source_ref": "REF1", "detail": "d", "raised_at": T0, "reason_type": "CARD_DECLINE",
                       "reason_code": "LOST_CARD", "new_payment_type": new_type, "customer_name": "Pat",
                       "email": "p@x.org", "amount": "12.34", "currency": "GBP", "invoice_number": "INV1",
                       "retry_on": "2026-12-04", "mandate_reference": "CMP-ACC1", "service_user_number": "123456"}
                rendered = templates.render(action.target, workflow.context(row))
                assert rendered.subject and "Dear Pat," in rendered.text, action.target


def test_mandate_confirmation_carries_the_direct_debit_guarantee():
    row = {"event_id": 7, "event_type": "DIRECT_DEBIT", "event_code": "MANDATE_SETUP_CONFIRMED",
           "account_number": "ACC1", "source_ref": "MND-1", "detail": "", "raised_at": T0, "reason_type": None,
           "reason_code": None, "new_payment_type": None, "customer_name": "Pat",
           "email": "p@x.org", "amount": None, "currency": None, "invoice_number": None, "retry_on": None,
           "mandate_reference": "CMP-ACC1", "service_user_number": "123456"}
    rendered = Templates(CONFIG / "templates").render("mandate_confirmation", workflow.context(row))
    assert rendered.subject == "Confirmation of your Direct Debit Instruction"
    assert "Direct Debit reference: CMP-ACC1" in rendered.text
    assert ("- The Guarantee is offered by all banks and building societies that accept instructions to pay "
            "Direct Debits\n") in rendered.text
    assert "you are entitled to a full and immediate refund of the amount paid" in rendered.text
    assert "You can cancel a Direct Debit at any time by simply contacting your bank or building society." \
        in rendered.text


def test_an_unknown_template_is_a_clear_configuration_error(tmp_path):
    shutil.copytree(CONFIG, tmp_path / "config")
    actions = tmp_path / "config" / "workflow_actions.yaml"
    actions.write_text(actions.read_text().replace("template: card_payment_retry", "template: card_payment_retyr"))
    (tmp_path / "config" / "templates" / "enrolment_failed.body.txt").write_text("Dear {{ account.name }\n")
    errors = [str(e) for e in check_config_dir(tmp_path / "config")
              if "workflow_actions.yaml" in str(e)]
    assert len(errors) == 2
    assert "actions[0].template: unknown template 'card_payment_retyr'" in errors[0]
    assert "known templates: advance_notice, card_payment_cancelled, card_payment_declined" in errors[0]
    assert "template enrolment_failed.body.txt line 1: unexpected '}'" in errors[1]


def test_card_decline_communication_arrives_once_with_recipient_subject_and_body(platform, smtp_server):
    account, transaction, event_id = soft_decline(platform)
    assert [m["Subject"] for _, m in smtp_server.messages] == [
        "Card payment advance notice: 25.00 GBP on 2026-12-01"], "the payment's notice went days before it"
    smtp_server.messages.clear()
    summary = dispatch(platform)
    assert summary["actions_done"] == {"COMMUNICATION": 1} and summary["messages_sent"] == 1
    [(recipients, message)] = smtp_server.messages
    assert recipients == ["pat@example.org"]
    [(retry_on,)] = platform.query("SELECT retry_due_on::VARCHAR FROM card_transactions WHERE transaction_id = ?",
                                   [transaction])
    assert message["Subject"] == f"Your card payment was declined - we will try again on {retry_on}"
    assert message["Message-ID"] == f"<cmp-communication-event-{event_id}@cmp-pipelines.local>"
    text = text_of(message)
    assert text.startswith("Dear Pat <Smith> & Co,\n")
    assert "Your card payment of 25.00 GBP for invoice INV900000001 was declined" in text
    assert f"Reference: {transaction}" in text
    html = html_of(message)
    assert "Dear Pat &lt;Smith&gt; &amp; Co," in html and "<Smith>" not in html, "HTML is autoescaped"
    with platform.connect() as con:
        assert workflow.events(con, event_id=event_id)[0]["status"] == "DONE"

    # a second dispatcher, and one that finds the event PENDING again (a crash before DONE), send nothing twice
    assert dispatch(platform, T0 + timedelta(minutes=1))["messages_sent"] == 0
    with platform.connect() as con:
        con.execute("UPDATE workflow_dispatch SET status = 'PENDING' WHERE event_id = ?", [event_id])
    again = dispatch(platform, T0 + timedelta(minutes=2))
    assert again["actions_done"] == {"COMMUNICATION": 1} and again["messages_sent"] == 0
    assert len(smtp_server.messages) == 1
    assert platform.query("SELECT count(*), min(status) FROM email_outbox WHERE kind = 'COMMUNICATION'") == [
        (2, "SENT")], "the advance notice and the decline, once each"


@pytest.mark.parametrize("refusal", ["451 4.3.0 Mailbox temporarily unavailable", "550 5.1.1 No such user"])
def test_a_refusing_server_is_retried_not_marked_sent_and_delivers_once(platform, smtp_server, refusal):
    event_id = raise_event(platform, "HARDWARE_ORDER", "ORDER_DISPATCH_ERROR", "ACC00000001", "ORD-1", "x")
    smtp_server.refuse_with = refusal
    first = dispatch(platform)
    assert (first["messages_sent"], first["messages_retrying"]) == (0, 1)
    [(status, attempts, error, next_at)] = platform.query(
        "SELECT status, attempts, last_error, next_attempt_at FROM email_outbox")
    assert (status, attempts, error) == ("PENDING", 1, f"SMTP {refusal}")
    assert next_at == T0 + timedelta(minutes=1)
    assert dispatch(platform, T0 + timedelta(seconds=30))["messages_retrying"] == 0, "backoff: not due yet"
    assert dispatch(platform, T0 + timedelta(minutes=1))["messages_retrying"] == 1
    assert platform.query("SELECT attempts, next_attempt_at FROM email_outbox") == [
        (2, T0 + timedelta(minutes=3))]
    smtp_server.refuse_with = None
    assert dispatch(platform, T0 + timedelta(minutes=3))["messages_sent"] == 1
    assert dispatch(platform, T0 + timedelta(hours=3))["messages_sent"] == 0
    assert len(smtp_server.messages) == 1
    assert smtp_server.messages[0][0] == ["customer1@example.com"]
    assert smtp_server.messages[0][1]["Subject"] == "A problem with your order ORD-1"
    assert smtp_server.messages[0][1]["Message-ID"] == f"<cmp-communication-event-{event_id}@cmp-pipelines.local>"
    assert platform.query("SELECT status, attempts, last_error FROM email_outbox") == [("SENT", 3, None)]


def test_attempts_run_out_to_failed(platform, smtp_server, monkeypatch):
    monkeypatch.setattr(outbox, "MAX_ATTEMPTS", 2)
    raise_event(platform, "DEVICE_ENROLMENT", "ENROLMENT_FAILED", "ACC00000002", "DEV-1", "x")
    smtp_server.refuse_with = "554 5.7.1 Rejected"
    dispatch(platform)
    summary = dispatch(platform, T0 + timedelta(hours=1))
    assert summary["messages_failed"] == 1
    assert platform.query("SELECT status, attempts FROM email_outbox") == [("FAILED", 2)]
    smtp_server.refuse_with = None
    assert dispatch(platform, T0 + timedelta(days=1))["messages_sent"] == 0, "FAILED stays failed"


def test_no_email_no_action_and_unconfigured_events(platform, smtp_server):
    no_email = raise_event(platform, "HARDWARE_ORDER", "ORDER_DISPATCH_ERROR", "ACC00000001", "ORD-1", "x")
    with platform.connect() as con:
        con.execute("UPDATE accounts SET email = NULL WHERE account_number = 'ACC00000001'")
    unknown = raise_event(platform, "SOMETHING", "NEW_KIND", "ACC00000002", "X-1", "y")
    summary = dispatch(platform)
    assert (summary["communications_skipped_no_email"], summary["messages_sent"]) == (1, 0)
    with platform.connect() as con:
        skipped, failed = workflow.events(con, event_id=no_email)[0], workflow.events(con, event_id=unknown)[0]
        assert (skipped["status"], skipped["result"]) == ("DONE", "not sent: the account has no e-mail address")
        assert (failed["status"], failed["action"], failed["last_error"]) == (
            "FAILED", "UNCONFIGURED", "no action is configured for SOMETHING/NEW_KIND in workflow_actions.yaml")
        with pytest.raises(ValueError, match="no action is configured for SOMETHING/NEW_KIND"):
            workflow.retry(con, load_workflow_actions(CONFIG), [unknown], T0)
        with pytest.raises(ValueError, match=f"event {no_email} is DONE; its action is not repeated"):
            workflow.retry(con, load_workflow_actions(CONFIG), [no_email], T0)
    assert smtp_server.messages == []


class Hook(BaseHTTPRequestHandler):
    answers: list[int] = []
    received: list[tuple[str, dict]] = []

    def do_POST(self):  # noqa: N802 - http.server's hook name
        body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Hook.received.append((self.headers["Idempotency-Key"], body))
        self.send_response(Hook.answers.pop(0) if Hook.answers else 200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_retried_until_accepted_and_operator_task_opened_once(platform, tmp_path, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Hook.answers, Hook.received = [503], []
    config = tmp_path / "config"
    shutil.copytree(CONFIG, config)
    text = (config / "workflow_actions.yaml").read_text().replace(
        "{event_type: HARDWARE_ORDER, event_code: ORDER_DISPATCH_ERROR, action: communication,\n"
        "     template: hardware_order_error}",
        f"{{event_type: HARDWARE_ORDER, event_code: ORDER_DISPATCH_ERROR, action: webhook,\n"
        f"     url: 'http://127.0.0.1:{server.server_port}/events'}}")
    (config / "workflow_actions.yaml").write_text(text)
    hook = raise_event(platform, "HARDWARE_ORDER", "ORDER_DISPATCH_ERROR", "ACC00000003", "ORD-9", "failed")
    task = raise_event(platform, "HARDWARE_ORDER", "FRAUD_CHECK_FAILED", "ACC00000004", "ORD-10", "fraud")
    try:
        with platform.connect() as con:
            smtp = outbox.SmtpSettings(None)
            first = run_dispatcher(con, config, smtp, T0)
            assert first["actions_done"] == {"OPERATOR_TASK": 1} and first["actions_retrying"] == 1
            assert workflow.events(con, event_id=hook)[0]["last_error"] == \
                f"webhook http://127.0.0.1:{server.server_port}/events answered HTTP 503"
            second = run_dispatcher(con, config, smtp, T0 + timedelta(minutes=5))
            assert second["actions_done"] == {"WEBHOOK": 1}
            assert run_dispatcher(con, config, smtp, T0 + timedelta(hours=1))["actions_done"] == {}
            tasks = con.execute("SELECT event_id, queue, account_number, summary FROM operator_tasks").fetchall()
    finally:
        server.shutdown()
    assert [key for key, _ in Hook.received] == [f"cmp-event-{hook}", f"cmp-event-{hook}"]
    assert Hook.received[-1][1] | {"raised_at": None} == {
        "event_id": hook, "event_type": "HARDWARE_ORDER", "event_code": "ORDER_DISPATCH_ERROR",
        "account_number": "ACC00000003", "source_ref": "ORD-9", "detail": "failed", "reason_type": None,
        "reason_code": None, "new_payment_type": None, "raised_at": None}
    assert tasks == [(task, "FRAUD_REVIEW", "ACC00000004", "HARDWARE_ORDER/FRAUD_CHECK_FAILED: fraud")]


def test_a_long_partner_file_name_keeps_message_ids_and_eml_names_short(platform):
    """Found by the hostile-inbound test: a 250-character file name made the .eml name too long to write."""
    key = "quarantine-PAYPOINT/" + "Q" * 250 + ".json.enc"
    with platform.connect() as con:
        mid, new = outbox.enqueue(con, kind="ALERT", key=key, recipients=["ops@example.com"], subject="s " * 60,
                                  body_text="b", now=T0)
        assert new and len(mid) < 100
        assert outbox.enqueue(con, kind="ALERT", key=key, recipients=["ops@example.com"], subject="s", body_text="b",
                              now=T0) == (mid, False)
        assert outbox.deliver(con, outbox.SmtpSettings(None), T0).sent == {mid: "file"}
    [eml] = (platform.root / "outbound" / "alerts").glob("*.eml")
    assert len(eml.name) < 100 and f"Message-ID: {mid}" in eml.read_text()
