"""`accounts` (set-up, refunds, look-ups) and `nrp release-held` (suspected duplicates)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from cmp_pipelines.cli.common import _config, _connect, _fail, _load_config, _not_found, _setup
from cmp_pipelines.cli.identity import Forbidden, authorized
from cmp_pipelines.core.settings import paths


@click.group()
def nrp() -> None:
    """Non-recurring payments: operator actions."""


@nrp.command("release-held")
@click.argument("batch")
@click.option("--record", "record_id", default=None, help="Release only this record id (default: every held one).")
def nrp_release_held(batch: str, record_id: str | None) -> None:
    """Post the records of load batch BATCH (NRPL-...) held as suspected duplicates of an earlier file.

    They are posted once, under the same ledger keys as the flow's postings, in a release posting batch with
    its own posting file; releasing again posts nothing, and writes the posting file of a release that failed
    after posting (the probe ledger_posting_files_missing names it).
    """
    from cmp_pipelines.core.crypto.keyring import PartnerKeyring
    from cmp_pipelines.core.money import format_minor
    from cmp_pipelines.core.settings import store
    from cmp_pipelines.defs.nrp.flow import NonRecurringPayments
    from cmp_pipelines.lib.resources.file_store import configured_file_store

    partners, _ = _config()
    if store().backend == "postgres":
        from cmp_pipelines.core.db.mirror import mirrored

        opened = mirrored()
    else:
        opened = _connect()
    with opened as opened_store:
        con, mirror = (opened_store.con, opened_store) if store().backend == "postgres" else (opened_store, None)
        flow = NonRecurringPayments(con, configured_file_store(), PartnerKeyring(paths().keys_dir), partners,
                                    mirror=mirror)
        try:
            result = flow.release_held(batch, record_id)
        except LookupError as exc:
            _fail(str(exc.args[0]))
    if not result.released:
        click.echo(f"nothing held in {batch}" + (f" for record {record_id}" if record_id else "") + "; nothing posted")
        if result.posting_file:
            click.echo(f"wrote the posting file an earlier release left unwritten: {result.posting_file} "
                       f"({result.posting_batch_id})")
        return
    click.echo(f"released {result.released} record(s) of {batch}: posted {result.posted_now} "
               f"({format_minor(-result.total_minor)}) in {result.posting_batch_id}; "
               f"posting file {result.posting_file}")


@click.group()
def accounts() -> None:
    """Account look-ups and payment set-up."""


@accounts.command("set-payment-type")
@click.argument("account_number")
@click.argument("payment_type", type=click.Choice(["MANUAL", "RECURRING_CARD", "DIRECT_DEBIT"]))
@click.option("--card-token", help="The payment provider's card token (never a card number).")
@click.option("--last-four", help="The card's last four digits.")
@click.option("--expiry", help="The card's expiry, MM/YY or YYYY-MM.")
@click.option("--provider", help="Card provider partner id (default: the only configured one).")
def accounts_set_payment_type(account_number: str, payment_type: str, card_token: str | None,
                              last_four: str | None, expiry: str | None, provider: str | None) -> None:
    """Set how ACCOUNT_NUMBER pays; RECURRING_CARD needs a card token (now or registered before).

    Registering a card needs REGISTER_CARD too. The operator is $CMP_OPERATOR (config/operators.yaml)."""
    from cmp_pipelines.core.payment_setup import set_payment_type

    operator, _ = authorized("SET_PAYMENT_TYPE")
    if card_token is not None:
        authorized("REGISTER_CARD")
    profile = _setup(lambda con, partners: set_payment_type(
        con, account_number, payment_type, partners=partners, now=datetime.now(UTC), cause=f"cli {operator}",
        card_token=card_token, last_four=last_four, expiry=expiry, provider=provider))
    click.echo(json.dumps(profile, indent=2))


@accounts.command("approve-refund")
@click.argument("account_number")
@click.argument("amount")
@click.option("--due", default=None, help="Pay on or after this day, YYYY-MM-DD (default: today).")
@click.option("--reason", default=None, help="Why the refund was approved.")
def accounts_approve_refund(account_number: str, amount: str, due: str | None, reason: str | None) -> None:
    """Approve a card refund of AMOUNT (e.g. 12.50) to the card on file; the CARD-mode run pays it.

    Needs an operator ($CMP_OPERATOR) whose level may APPROVE_REFUND (config/security.yaml)."""
    from datetime import date as date_type

    from cmp_pipelines.core.payment_setup import approve_card_refund

    operator, _ = authorized("APPROVE_REFUND")
    try:
        due_on = date_type.fromisoformat(due) if due else None
    except ValueError:
        _fail(f"--due {due!r} is not a date (YYYY-MM-DD)")
    refund_id = _setup(lambda con, _: approve_card_refund(con, account_number, amount, now=datetime.now(UTC),
                                                          due_on=due_on, reason=reason))
    click.echo(f"refund {refund_id} approved by {operator}: {amount} to the card on file of {account_number}")


@accounts.command("create")
@click.argument("account_number")
@click.option("--name", required=True, help="The customer's name.")
@click.option("--payment-type", default="MANUAL", show_default=True,
              type=click.Choice(["MANUAL", "RECURRING_CARD", "DIRECT_DEBIT"]))
@click.option("--currency", default="GBP", show_default=True)
@click.option("--email", default=None, help="Where customer communications are e-mailed.")
@click.option("--phone", default=None, help="A phone number for SMS (optional; SMS is not sent yet).")
def accounts_create(account_number: str, name: str, payment_type: str, currency: str, email: str | None,
                    phone: str | None) -> None:
    """Create an account; its payment term is the default configured for its payment type.

    The operator ($CMP_OPERATOR) must be allowed to CREATE_ACCOUNT, and its security level must be one the payment
    term default names (config/payment_terms.yaml); there is no flag to claim a level."""
    from cmp_pipelines.core.config import load_payment_terms
    from cmp_pipelines.core.payment_setup import SetupError, create_account, term_default_allows

    operator, security_level = authorized("CREATE_ACCOUNT")

    terms = _load_config(load_payment_terms)
    try:
        term_default_allows(terms, payment_type, security_level)
    except SetupError as exc:
        raise Forbidden(f"refused: operator {operator} {exc.message}") from None
    view = _setup(lambda con, _: create_account(con, account_number, name, terms=terms, now=datetime.now(UTC),
                                                payment_type=payment_type, currency=currency,
                                                security_level=security_level, email=email, phone=phone))
    click.echo(json.dumps({**view, "email": email, "phone": phone}, indent=2))


@accounts.command("show")
@click.argument("account_number")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def accounts_show(account_number: str, as_json: bool) -> None:
    """The account, its balance (decimal), its open invoices and the charges waiting for its next invoice."""
    from cmp_pipelines.core.accounts import account_view

    with _connect(read_only=True) as con:
        view = account_view(con, account_number)
    if view is None:
        _not_found("account", account_number)
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    click.echo(f"{view['account_number']}  {view['name']}  balance {view['balance']} {view['currency']}")
    for invoice in view["open_invoices"]:
        click.echo(f"  {invoice['invoice_number']}  due {invoice['due_on']}  outstanding {invoice['outstanding']}")
    for charge in view["pending_charges"]:
        click.echo(f"  pending on the next invoice: {charge['description']}  {charge['amount']} {charge['currency']}")


def _day(option: str, value: str | None):
    from datetime import date as date_type

    try:
        return date_type.fromisoformat(value) if value else None
    except ValueError:
        _fail(f"{option} {value!r} is not a date (YYYY-MM-DD)")


@accounts.command("payments")
@click.argument("account_number")
@click.option("--method", default=None, help="CASH, CHEQUE, POSTAL_ORDER, BANK_TRANSFER, RECURRING_CARD, DIRECT_DEBIT, "
                                             "CARD_ON_FILE or HOSTED_PAGE.")
@click.option("--status", default=None, help="Only rows with this status (e.g. ACCEPTED, REJECTED, HARD_DECLINE).")
@click.option("--kind", default=None, help="PAYMENT, REFUND, REVERSAL or RETURN.")
@click.option("--from", "date_from", default=None, help="From this day, YYYY-MM-DD (inclusive).")
@click.option("--to", "date_to", default=None, help="To this day, YYYY-MM-DD (inclusive).")
@click.option("--limit", default=50, show_default=True, help="Rows per page (1-500).")
@click.option("--offset", default=0, show_default=True, help="Rows to skip (the previous page's next offset).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def accounts_payments(account_number: str, method: str | None, status: str | None, kind: str | None,
                      date_from: str | None, date_to: str | None, limit: int, offset: int, as_json: bool) -> None:
    """The account's payments across every flow (NRP, card, direct debit, one-off; refunds, reversals, returns),
    newest first, with status and reason: the Payments screen."""
    from cmp_pipelines.core.payment_history import HistoryFilter, HistoryFilterError, account_history

    flt = HistoryFilter(method=method, status=status, kind=kind, date_from=_day("--from", date_from),
                        date_to=_day("--to", date_to), limit=limit, offset=offset)
    try:
        flt.check()
    except HistoryFilterError as exc:
        _fail(f"--{exc.field}: {exc.message}")
    with _connect(read_only=True) as con:
        history = account_history(con, account_number, flt)
    if history is None:
        _not_found("account", account_number)
    if as_json:
        click.echo(json.dumps(history.as_dict(), indent=2))
        return
    from cmp_pipelines.core.config import load_rejection_codes

    codes = _load_config(load_rejection_codes).codes

    def reason(r: dict) -> str:
        """The code, its description and, for a card or direct-debit rejection code, its configured reason."""
        code = codes.get(r["reason_code"]) if r["source"] in ("CARD", "DIRECT_DEBIT") else None
        return " ".join(x for x in (r["reason_code"], r["reason"] and f"({r['reason']})",
                                    code and f"{code.reason_type}/{code.reason_code}") if x)

    header = ("DATE", "SOURCE", "METHOD", "KIND", "AMOUNT", "STATUS", "REASON", "INVOICE", "REFERENCE")
    lines = [header] + [(r["date"], r["source"], r["method"] or "", r["kind"], r["amount"] or "-", r["status"],
                         reason(r), r["invoice_number"] or "", r["reference"] or r["payment_ref"])
                        for r in history.rows]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    for line in lines:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
    shown = f"{history.offset + 1}-{history.offset + len(history.rows)}" if history.rows else "none"
    more = f"; next page: --offset {history.next_offset}" if history.next_offset is not None else ""
    click.echo(f"{account_number}: {shown} of {history.total} payment(s){more}")
