"""Advance notices in tests: the daily notice step and a dispatcher of the notices alone, run on each day an
invoice still without a notice was issued, as if both had run every day. Collections need a notice sent early
enough (core/notices.py); tests of other things get them the way production would, days before collecting."""

from __future__ import annotations

from datetime import UTC, date, datetime

from cmp_pipelines.core import notices, outbox, workflow
from cmp_pipelines.core.config import load_direct_debit, load_partners
from cmp_pipelines.core.config_workflow import load_workflow_actions
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.core.templates import Templates
from cmp_pipelines.defs.card_payments.flow import RecurringCardPayments
from cmp_pipelines.defs.direct_debit.collections import DirectDebitCollections

CONFIG = PROJECT_ROOT / "config"


def _flow(platform, con, payment_type: str, now: datetime):
    partners = load_partners(CONFIG)
    if payment_type == "RECURRING_CARD":
        return RecurringCardPayments(con, platform.files, platform.keyring, partners, now)
    return DirectDebitCollections(con, platform.files, platform.keyring, load_direct_debit(CONFIG, partners), now)


def dispatch_notices(con, now: datetime, smtp: outbox.SmtpSettings | None = None) -> int:
    """The dispatcher's pass for ADVANCE_NOTICE events only (other events stay as they are); returns how many
    notices became SENT."""
    workflow.dispatch(con, load_workflow_actions(CONFIG), Templates(CONFIG / "templates"), now,
                      event_types=[notices.EVENT_TYPE])
    ids = [m for (m,) in con.execute(
        "SELECT o.message_id FROM email_outbox o JOIN collection_notices n ON o.source_ref = n.event_id::VARCHAR "
        "WHERE o.kind = 'COMMUNICATION' AND o.status = 'PENDING'").fetchall()]
    outbox.deliver(con, smtp or outbox.SmtpSettings.from_env(), now, only=ids)
    return notices.refresh_sent(con)


def give_notices(platform, payment_type: str, up_to: date, hour: int = 1) -> list[date]:
    """Raise and send notices on every day (<= `up_to`) an invoice without a notice of `payment_type` was issued;
    returns those days. Accounts need an e-mail address for a notice to go."""
    with platform.connect() as con:
        days = [d for (d,) in con.execute(
            "SELECT DISTINCT issued_on FROM invoices i WHERE issued_on <= ? AND NOT EXISTS (SELECT 1 FROM "
            "collection_notices n WHERE n.invoice_number = i.invoice_number AND n.payment_type = ?) ORDER BY 1",
            [up_to, payment_type]).fetchall()]
        for day in days:
            now = datetime(day.year, day.month, day.day, hour, tzinfo=UTC)
            _flow(platform, con, payment_type, now).raise_notices(day)
            dispatch_notices(con, now)
    return days
