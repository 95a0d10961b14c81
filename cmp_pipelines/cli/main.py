"""The `cmp-pipelines` command: set-up, demo data, partner files, headless runs and look-ups."""

from __future__ import annotations

import json
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from cmp_pipelines.core.settings import PROJECT_ROOT, paths


def _fail(message: str) -> None:
    raise click.ClickException(message)


def _load_config(load, *args):
    """`load(config_dir, *args)`; a configuration error becomes a CLI error."""
    from cmp_pipelines.core.config import ConfigError

    try:
        return load(paths().config_dir, *args)
    except ConfigError as exc:
        _fail(f"configuration error: {exc}")


def _config():
    from cmp_pipelines.core.config import load_partners, load_probes

    return _load_config(load_partners), _load_config(load_probes)


def _connect(read_only: bool = False):
    from cmp_pipelines.core.db.connection import StoreBusyError, connect

    try:
        return connect(paths().database, read_only=read_only, wait_seconds=30)
    except StoreBusyError as exc:
        _fail(str(exc))


def _refusals_as_errors(action, config, refusal: type[ValueError]):
    """Run `action(con, config)` in the store; a refusal (`refusal` with .field and .message) becomes a clear CLI
    error naming the field."""
    with _connect() as con:
        try:
            return action(con, config)
        except refusal as exc:
            _fail(f"{exc.field}: {exc.message}")


def _dagster_home() -> Path:
    home = paths().dagster_home
    home.mkdir(parents=True, exist_ok=True)
    source = PROJECT_ROOT / "dagster.yaml"
    target = home / "dagster.yaml"
    if source.exists() and (not target.exists() or target.read_bytes() != source.read_bytes()):
        shutil.copyfile(source, target)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """cmp-pipelines: the payments back office (files, ledger, probes) around a Dagster code location.

    Every command honours $CMP_DATA_DIR (default ./data), $CMP_KEYS_DIR and $CMP_CONFIG_DIR.
    """


@main.command()
def init() -> None:
    """Create the data folders, migrate the store, load configuration and prepare the Dagster instance."""
    from cmp_pipelines.core.reference import sync_reference_data

    p = paths()
    for folder in p.skeleton():
        folder.mkdir(parents=True, exist_ok=True)
    partners, probes = _config()
    for partner in partners.values():
        for feed in partner.feeds:
            (p.inbound / feed / partner.partner_id).mkdir(parents=True, exist_ok=True)
    with _connect() as con:
        sync_reference_data(con, partners, probes)
    home = _dagster_home()
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        instance.event_log_storage.set_concurrency_slots("cmp_db", 1)
    click.echo(f"store ready: {p.database}\ndagster instance: {home} (pool cmp_db limited to 1)")


@main.group()
def keys() -> None:
    """Partner encryption keys ($CMP_KEYS_DIR/<partner>.keys, newest key first)."""


@keys.command("init")
@click.option("--partner", "partner_ids", multiple=True, help="Partner id (default: every configured partner).")
@click.option("--rotate", is_flag=True, help="Add a new newest key, keeping the old ones for decryption.")
def keys_init(partner_ids: tuple[str, ...], rotate: bool) -> None:
    """Create demo keys for partners that have none (or rotate with --rotate). Keys are never printed."""
    from cmp_pipelines.core.crypto.keyring import PartnerKeyring

    partners, _ = _config()
    keyring = PartnerKeyring(paths().keys_dir)
    for partner in partner_ids or tuple(partners):
        existed = keyring.has_keys(partner)
        path = keyring.init_keys(partner, rotate=rotate)
        state = "rotated" if rotate and existed else ("kept" if existed else "created")
        click.echo(f"{partner}: {state} {path}")


@main.group()
def demo() -> None:
    """Deterministic demo data."""


@demo.command("seed")
@click.option("--accounts", default=1000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--seed", default=42, show_default=True, type=int)
def demo_seed(accounts: int, seed: int) -> None:
    """Accounts ACC00000001..N, each with at least one open invoice (its charge posted to the ledger)."""
    from cmp_pipelines.core.config import load_payment_terms
    from cmp_pipelines.core.reference import sync_reference_data
    from cmp_pipelines.demo import data as demo_data

    partners, probes = _config()
    manual_term = load_payment_terms(paths().config_dir).default_for("MANUAL")
    with _connect() as con, click.progressbar(length=2, label="seeding accounts and invoices") as bar:
        sync_reference_data(con, partners, probes)
        bar.update(1)
        invoices = demo_data.seed_accounts(con, accounts, seed, datetime.now(UTC))
        if manual_term is not None:  # created as MANUAL: the MANUAL payment term default applies
            con.execute("UPDATE accounts SET payment_term = ? WHERE payment_term IS NULL AND NOT is_suspense",
                        [manual_term.code])
        bar.update(1)
    click.echo(f"{accounts} accounts, {invoices} invoices in total")


@demo.command("files")
@click.option("--seed", default=42, show_default=True, type=int)
def demo_files(seed: int) -> None:
    """Sample encrypted non-recurring payment files in data/inbound/nrp/ (one with bad records, one empty)."""
    from cmp_pipelines.core.crypto.keyring import PartnerKeyring
    from cmp_pipelines.demo import data as demo_data
    from cmp_pipelines.lib.resources.file_store import LocalFileStore

    with _connect() as con:
        accounts = con.execute("SELECT count(*) FROM accounts WHERE NOT is_suspense").fetchone()[0]
    if accounts < 2:
        _fail("no demo accounts: run `cmp-pipelines demo seed` first")
    with click.progressbar(length=4, label="writing sample files") as bar:
        written = demo_data.demo_files(
            LocalFileStore(), PartnerKeyring(paths().keys_dir), accounts, seed, progress=lambda _: bar.update(1)
        )
    for path in written:
        click.echo(path)


@demo.command("cards")
def demo_cards() -> None:
    """Every 10th demo account pays by recurring card (a token, never a card number), with an invoice due."""
    from cmp_pipelines.core.payment_setup import card_providers
    from cmp_pipelines.demo import data as demo_data

    partners, _ = _config()
    providers = card_providers(partners)
    if not providers:
        _fail("no card provider in config/partners.yaml (a partner with feed card_rejections)")
    with _connect() as con:
        count = demo_data.seed_card_accounts(con, providers[0], datetime.now(UTC))
    click.echo(f"{count} accounts pay by recurring card through {providers[0]}")


@demo.command("card-rejections")
def demo_card_rejections() -> None:
    """A sample provider rejection file for extracted card payments (soft, hard, unknown code)."""
    from cmp_pipelines.core.crypto.keyring import PartnerKeyring
    from cmp_pipelines.core.payment_setup import card_providers
    from cmp_pipelines.demo import data as demo_data
    from cmp_pipelines.lib.resources.file_store import LocalFileStore

    partners, _ = _config()
    provider = card_providers(partners)[0]
    with _connect() as con:
        path = demo_data.card_rejection_file(con, LocalFileStore(), PartnerKeyring(paths().keys_dir), provider,
                                             datetime.now(UTC))
    if path is None:
        _fail("no extracted card payment to reject: run `cmp-pipelines run-card-payments` first")
    click.echo(path)


@demo.command("direct-debit")
def demo_direct_debit() -> None:
    """Every 10th demo account (numbers ending 5) pays by direct debit with an invoice due; a few mandates wait
    for today's AUDDIS."""
    from cmp_pipelines.demo import data as demo_data

    config = _dd_config()
    with _connect() as con:
        active, pending = demo_data.seed_direct_debit_accounts(con, config.service_user_number, datetime.now(UTC))
    click.echo(f"{active} active mandate(s) collecting by direct debit, {pending} waiting for the next AUDDIS")


@demo.command("bacs-reports")
def demo_bacs_reports() -> None:
    """Sample ADDACS and ARUDD reports from the bureau for today's mandates and debits."""
    from cmp_pipelines.core.crypto.keyring import PartnerKeyring
    from cmp_pipelines.demo import data as demo_data
    from cmp_pipelines.lib.resources.file_store import LocalFileStore

    config = _dd_config()
    with _connect() as con:
        written = demo_data.bacs_report_files(con, LocalFileStore(), PartnerKeyring(paths().keys_dir), config.bureau,
                                              config.service_user_number, datetime.now(UTC))
    for path in written:
        click.echo(f"wrote {path}")
    if not written:
        click.echo("nothing to report on: run `demo direct-debit` and `run-dd-collections` first")


@main.group()
def files() -> None:
    """Encrypt or decrypt a partner file with that partner's keys."""


def _crypt(encrypt: bool, partner: str, source: Path, target: Path) -> None:
    from cmp_pipelines.core.crypto.keyring import PartnerKeyring
    from cmp_pipelines.core.files.errors import FileRejected

    keyring = PartnerKeyring(paths().keys_dir)
    try:
        data = source.read_bytes()
        out = keyring.encrypt(partner, data) if encrypt else keyring.decrypt(partner, data)
    except FileRejected as exc:
        _fail(f"{source}: {exc.message}")
    except OSError as exc:
        _fail(f"{source}: {exc.strerror}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part")  # a sensor never sees a half-written file
    partial.write_bytes(out)
    partial.replace(target)
    click.echo(f"{'encrypted' if encrypt else 'decrypted'} {source} -> {target}")


@files.command("encrypt")
@click.option("--partner", required=True)
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
def files_encrypt(partner: str, source: Path, target: Path) -> None:
    """Encrypt SOURCE for PARTNER into TARGET (Fernet, newest key)."""
    _crypt(True, partner, source, target)


@files.command("decrypt")
@click.option("--partner", required=True)
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
def files_decrypt(partner: str, source: Path, target: Path) -> None:
    """Decrypt SOURCE with any of PARTNER's keys into TARGET."""
    _crypt(False, partner, source, target)


@main.command("run-pending")
@click.option("--max-ticks", default=100, show_default=True, help="Stop after this many sensor evaluations.")
def run_pending(max_ticks: int) -> None:
    """Evaluate every sensor once against the persistent instance and execute the runs it requests.

    The runs are recorded in the same Dagster instance as the UI's, so they show there too.
    """
    _dagster_home()
    from cmp_pipelines.lib.headless import run_pending_sensors

    outcomes = run_pending_sensors(max_ticks=max_ticks, echo=click.echo)
    failed = [o for o in outcomes if not o.success]
    click.echo(f"{len(outcomes)} run(s), {len(failed)} failed")


def _business_day(day: str | None):
    from datetime import date as date_type

    try:
        return date_type.fromisoformat(day) if day else datetime.now(UTC).date()
    except ValueError:
        _fail(f"--date {day!r} is not a date (YYYY-MM-DD)")


_date_option = click.option("--date", "day", default=None, help="Business day YYYY-MM-DD (default: today, UTC).")


def _run_day(job_name: str, day: str | None, batch_prefix: str, what: str) -> None:
    """One daily partition of a job, executed here and recorded in the instance, then the batch it made
    (`<batch_prefix>-YYYYMMDD`)."""
    business_day = _business_day(day)
    batch_id = f"{batch_prefix}-{business_day:%Y%m%d}"
    if business_day > datetime.now(UTC).date():
        _fail(f"{business_day} is in the future: a daily job runs for today or an earlier day")
    _dagster_home()
    from cmp_pipelines.lib.headless import run_partition

    outcome = run_partition(job_name, business_day.isoformat())
    if not outcome.success:
        _fail(f"{job_name} {business_day} failed: {outcome.error}")
    with _connect(read_only=True) as con:
        count, total, path = con.execute(
            "SELECT record_count, minor_to_decimal(total_minor), output_path FROM batches WHERE batch_id = ?",
            [batch_id],
        ).fetchone()
    click.echo(f"{business_day}: {count} {what}, {total} in total -> {path or 'no file (nothing due)'}")


@main.command("run-card-payments")
@_date_option
def run_card_payments(day: str | None) -> None:
    """Run the Recurring Payments job in CARD mode for one day, as its daily schedule does (idempotent)."""
    _run_day("recurring_payments_card_job", day, "RCX", "card transaction(s)")


@main.command("run-auddis")
@_date_option
def run_auddis(day: str | None) -> None:
    """Run the AUDDIS extract for one day, as its daily schedule does (idempotent)."""
    _run_day("auddis_extract_job", day, "AUD", "instruction(s)")


@main.command("run-dd-collections")
@_date_option
def run_dd_collections(day: str | None) -> None:
    """Run the Recurring Payments job in DD mode for one day, as its daily schedule does (idempotent)."""
    _run_day("recurring_payments_dd_job", day, "DDX", "debit(s)")


@main.group()
def bacs() -> None:
    """Bacs submissions: check a Standard 18 file against the published layout."""


@bacs.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--partner", default=None, help="Whose keys decrypt an encrypted file (default: the Bacs bureau).")
def bacs_check(file: Path, partner: str | None) -> None:
    """Check FILE, a Standard 18 submission (plaintext, or encrypted for the bureau), and print every problem
    with its line and columns; exit 1 when there is any."""
    from cmp_pipelines.core.crypto.keyring import PartnerKeyring
    from cmp_pipelines.defs.direct_debit.bacs_check import check_text

    data = file.read_bytes()
    if data.startswith(b"gAAAAA"):  # a Fernet token
        partner = partner or _dd_config().bureau
        try:
            data = PartnerKeyring(paths().keys_dir).decrypt(partner, data)
        except Exception as exc:  # noqa: BLE001 - any failure to decrypt is reported the same way
            _fail(f"{file}: cannot decrypt with {partner}'s keys ({type(exc).__name__})")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        _fail(f"{file}: line {line}: byte {data[exc.start]:#04x} is not ASCII; a Standard 18 file is ASCII only")
    problems = check_text(text)
    for problem in problems:
        click.echo(str(problem))
    if problems:
        _fail(f"{file}: {len(problems)} problem(s); a bureau would refuse this submission")
    records = max(text.count("\n") - 7, 0)
    click.echo(f"{file}: conforms to Standard 18 ({records} data record(s))")


@main.group()
def mandates() -> None:
    """Direct Debit Instructions: set-up, amendment, cancellation."""


def _dd_config():
    from cmp_pipelines.core.config import load_direct_debit

    partners, _ = _config()
    return _load_config(load_direct_debit, partners)


@mandates.command("create")
@click.argument("account_number")
@click.option("--sort-code", required=True, help="Payer's sort code, 6 digits (12-34-56 accepted).")
@click.option("--bank-account", required=True, help="Payer's account number, 8 digits.")
@click.option("--account-name", required=True, help="Name on the payer's bank account.")
@click.option("--reference", default=None, help="Mandate reference (default CMP<account>).")
def mandates_create(account_number: str, sort_code: str, bank_account: str, account_name: str,
                    reference: str | None) -> None:
    """Register a mandate for ACCOUNT_NUMBER; it goes to Bacs on the next AUDDIS as 0N."""
    from cmp_pipelines.core.mandates import create_mandate

    config = _dd_config()
    view = _setup(lambda con, _: create_mandate(con, account_number, sort_code=sort_code, bank_account=bank_account,
                                                account_name=account_name, config=config, now=datetime.now(UTC),
                                                reference=reference))
    click.echo(json.dumps(view, indent=2))


@mandates.command("amend")
@click.argument("mandate_id")
@click.option("--sort-code", required=True)
@click.option("--bank-account", required=True)
@click.option("--account-name", required=True)
def mandates_amend(mandate_id: str, sort_code: str, bank_account: str, account_name: str) -> None:
    """New bank details for MANDATE_ID; sent as 0C (old details) then 0N (new) on the next AUDDIS."""
    from cmp_pipelines.core.mandates import amend_mandate

    view = _setup(lambda con, _: amend_mandate(con, mandate_id, sort_code=sort_code, bank_account=bank_account,
                                               account_name=account_name, now=datetime.now(UTC), cause="cli"))
    click.echo(json.dumps(view, indent=2))


@mandates.command("cancel")
@click.argument("mandate_id")
@click.option("--after-final-collection", is_flag=True,
              help="Collect what is due once more (transaction code 19), then cancel.")
def mandates_cancel(mandate_id: str, after_final_collection: bool) -> None:
    """Cancel MANDATE_ID; the bank is told with 0C on the next AUDDIS if it knew of it."""
    from cmp_pipelines.core.mandates import cancel_mandate

    view = _setup(lambda con, _: cancel_mandate(con, mandate_id, now=datetime.now(UTC), cause="cli",
                                                after_final_collection=after_final_collection))
    click.echo(json.dumps(view, indent=2))


@mandates.command("resume")
@click.argument("mandate_id")
@click.option("--reason", required=True, help="Why collection may go on (kept in the mandate's history).")
def mandates_resume(mandate_id: str, reason: str) -> None:
    """Collect again under MANDATE_ID, held by an ARUDD return (`mandates held` lists them)."""
    from cmp_pipelines.core.mandates import resume_mandate

    view = _setup(lambda con, _: resume_mandate(con, mandate_id, now=datetime.now(UTC), cause=reason))
    click.echo(json.dumps(view, indent=2))


@mandates.command("held")
def mandates_held() -> None:
    """Mandates held by an ARUDD return, and why: each waits for `mandates resume` or `mandates cancel`."""
    with _connect(read_only=True) as con:
        rows = con.execute("SELECT mandate_id, reference, account_number, held_reason FROM mandates "
                           "WHERE status = 'HELD' ORDER BY mandate_id").fetchall()
    for row in rows:
        click.echo("\t".join(str(v) for v in row))
    click.echo(f"{len(rows)} mandate(s) held")


@mandates.command("convert")
@click.argument("mandate_id")
def mandates_convert(mandate_id: str) -> None:
    """Lodge an active paper mandate electronically: 0S on the next AUDDIS."""
    from cmp_pipelines.core.mandates import convert_mandate

    view = _setup(lambda con, _: convert_mandate(con, mandate_id, now=datetime.now(UTC)))
    click.echo(json.dumps(view, indent=2))


@main.group()
def nrp() -> None:
    """Non-recurring payments: operator actions."""


@nrp.command("release-held")
@click.argument("batch")
@click.option("--record", "record_id", default=None, help="Release only this record id (default: every held one).")
def nrp_release_held(batch: str, record_id: str | None) -> None:
    """Post the records of load batch BATCH (NRPL-...) held as suspected duplicates of an earlier file.

    They are posted once, under the same ledger keys as the flow's postings, in a release posting batch with
    its own posting file; releasing again posts nothing.
    """
    from cmp_pipelines.core.crypto.keyring import PartnerKeyring
    from cmp_pipelines.core.money import format_minor
    from cmp_pipelines.defs.nrp.flow import NonRecurringPayments
    from cmp_pipelines.lib.resources.file_store import LocalFileStore

    partners, _ = _config()
    with _connect() as con:
        flow = NonRecurringPayments(con, LocalFileStore(), PartnerKeyring(paths().keys_dir), partners)
        try:
            result = flow.release_held(batch, record_id)
        except LookupError as exc:
            _fail(str(exc.args[0]))
    if not result.released:
        click.echo(f"nothing held in {batch}" + (f" for record {record_id}" if record_id else "") + "; nothing posted")
        return
    click.echo(f"released {result.released} record(s) of {batch}: posted {result.posted_now} "
               f"({format_minor(-result.total_minor)}) in {result.posting_batch_id}; "
               f"posting file {result.posting_file}")


@main.group()
def accounts() -> None:
    """Account look-ups and payment set-up."""


def _setup(action):
    """Run a payment set-up function; its refusals become a clear CLI error naming the field."""
    from cmp_pipelines.core.payment_setup import SetupError

    partners, _ = _config()
    return _refusals_as_errors(action, partners, SetupError)


@accounts.command("set-payment-type")
@click.argument("account_number")
@click.argument("payment_type", type=click.Choice(["MANUAL", "RECURRING_CARD", "DIRECT_DEBIT"]))
@click.option("--card-token", help="The payment provider's card token (never a card number).")
@click.option("--last-four", help="The card's last four digits.")
@click.option("--expiry", help="The card's expiry, MM/YY or YYYY-MM.")
@click.option("--provider", help="Card provider partner id (default: the only configured one).")
def accounts_set_payment_type(account_number: str, payment_type: str, card_token: str | None,
                              last_four: str | None, expiry: str | None, provider: str | None) -> None:
    """Set how ACCOUNT_NUMBER pays; RECURRING_CARD needs a card token (now or registered before)."""
    from cmp_pipelines.core.payment_setup import set_payment_type

    profile = _setup(lambda con, partners: set_payment_type(
        con, account_number, payment_type, partners=partners, now=datetime.now(UTC), cause="cli",
        card_token=card_token, last_four=last_four, expiry=expiry, provider=provider))
    click.echo(json.dumps(profile, indent=2))


@accounts.command("approve-refund")
@click.argument("account_number")
@click.argument("amount")
@click.option("--due", default=None, help="Pay on or after this day, YYYY-MM-DD (default: today).")
@click.option("--reason", default=None, help="Why the refund was approved.")
def accounts_approve_refund(account_number: str, amount: str, due: str | None, reason: str | None) -> None:
    """Approve a card refund of AMOUNT (e.g. 12.50) to the card on file; the CARD-mode run pays it."""
    from datetime import date as date_type

    from cmp_pipelines.core.payment_setup import approve_card_refund

    try:
        due_on = date_type.fromisoformat(due) if due else None
    except ValueError:
        _fail(f"--due {due!r} is not a date (YYYY-MM-DD)")
    refund_id = _setup(lambda con, _: approve_card_refund(con, account_number, amount, now=datetime.now(UTC),
                                                          due_on=due_on, reason=reason))
    click.echo(f"refund {refund_id} approved: {amount} to the card on file of {account_number}")


@accounts.command("create")
@click.argument("account_number")
@click.option("--name", required=True, help="The customer's name.")
@click.option("--payment-type", default="MANUAL", show_default=True,
              type=click.Choice(["MANUAL", "RECURRING_CARD", "DIRECT_DEBIT"]))
@click.option("--currency", default="GBP", show_default=True)
@click.option("--security-level", default="ADMIN", show_default=True,
              help="The creating user's security level (payment term defaults name who may use them).")
def accounts_create(account_number: str, name: str, payment_type: str, currency: str, security_level: str) -> None:
    """Create an account; its payment term is the default configured for its payment type."""
    from cmp_pipelines.core.config import load_payment_terms
    from cmp_pipelines.core.payment_setup import create_account

    terms = _load_config(load_payment_terms)
    view = _setup(lambda con, _: create_account(con, account_number, name, terms=terms, now=datetime.now(UTC),
                                                payment_type=payment_type, currency=currency,
                                                security_level=security_level))
    click.echo(json.dumps(view, indent=2))


@accounts.command("show")
@click.argument("account_number")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def accounts_show(account_number: str, as_json: bool) -> None:
    """The account, its balance (decimal) and its open invoices."""
    from cmp_pipelines.core.accounts import account_view

    with _connect(read_only=True) as con:
        view = account_view(con, account_number)
    if view is None:
        _fail(f"account {account_number} not found")
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    click.echo(f"{view['account_number']}  {view['name']}  balance {view['balance']} {view['currency']}")
    for invoice in view["open_invoices"]:
        click.echo(f"  {invoice['invoice_number']}  due {invoice['due_on']}  outstanding {invoice['outstanding']}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def probes(as_json: bool) -> None:
    """The latest value and status of every probe."""
    from cmp_pipelines.core.probe_queries import latest

    with _connect(read_only=True) as con:
        rows = latest(con)
    records = [
        {"probe": r[0], "name": r[1], "type": r[2], "value": r[3], "threshold": r[4],
         "status": "TRIPPED" if r[5] else "OK", "notified": r[6], "evaluated_at": r[7].isoformat()}
        for r in rows
    ]
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    if not records:
        click.echo("no probe has been evaluated yet")
    for r in records:
        click.echo(f"{r['status']:8} {r['type']:6} {r['value']:>8} / {r['threshold']:<8} {r['name']}")


@main.command()
def summary() -> None:
    """Batches, postings, quarantined files and probe results, at a glance."""
    from cmp_pipelines.core.accounts import platform_summary

    with _connect(read_only=True) as con:
        click.echo(platform_summary(con))


# ---- hardware orders -------------------------------------------------------------------------------------


@main.group()
def orders() -> None:
    """Hardware orders: create, add lines, check stock, generate; devices and enrolment."""


def _hardware():
    from cmp_pipelines.defs.hardware_orders.config import load_hardware_orders

    partners, _ = _config()
    return _load_config(load_hardware_orders, partners)


def _order_action(action):
    """Run an order operation; its refusals become a clear CLI error naming the field."""
    from cmp_pipelines.defs.hardware_orders.orders import OrderError

    return _refusals_as_errors(action, _hardware(), OrderError)


@orders.command("catalogue")
def orders_catalogue() -> None:
    """The products that can be ordered: SKU, type, price and warehouse."""
    from cmp_pipelines.core.money import format_minor

    for p in _hardware().catalogue.values():
        click.echo(f"{p.sku:16} {p.product_type:10} {format_minor(p.price_minor):>8} {p.currency} "
                   f"{p.warehouse:10} {p.description}")


@orders.command("create")
@click.argument("account_number")
@click.option("--billing", type=click.Choice(["IMMEDIATE", "NEXT_INVOICE"]), default="NEXT_INVOICE",
              show_default=True, help="Charge the ledger on completion, or a pending charge for the next invoice.")
@click.option("--fraud-check/--no-fraud-check", default=True, show_default=True,
              help="Check the delivery name and address before the order goes to the warehouse.")
@click.option("--enrol/--no-enrol", default=False, show_default=True,
              help="Enrol the dispatched handsets with their manufacturer.")
@click.option("--name", "delivery_name", help="Delivery name.")
@click.option("--line1", "address_line1", help="Delivery address, first line.")
@click.option("--line2", "address_line2", help="Delivery address, second line.")
@click.option("--town", help="Delivery town.")
@click.option("--postcode", help="Delivery postcode (UK).")
def orders_create(account_number: str, billing: str, fraud_check: bool, enrol: bool, delivery_name: str | None,
                  address_line1: str | None, address_line2: str | None, town: str | None,
                  postcode: str | None) -> None:
    """Create a NEW hardware order for ACCOUNT_NUMBER."""
    from cmp_pipelines.defs.hardware_orders.orders import Delivery, create_order

    delivery = Delivery(delivery_name, address_line1, address_line2, town, postcode)
    view = _order_action(lambda con, _: create_order(con, account_number, billing=billing, fraud_check=fraud_check,
                                                     enrolment=enrol, delivery=delivery, now=datetime.now(UTC),
                                                     cause="cli"))
    click.echo(json.dumps(view, indent=2))


@orders.command("add-line")
@click.argument("order_id")
@click.argument("sku")
@click.option("--quantity", default=1, show_default=True, type=int)
def orders_add_line(order_id: str, sku: str, quantity: int) -> None:
    """Add QUANTITY of catalogue product SKU to the NEW order ORDER_ID."""
    from cmp_pipelines.defs.hardware_orders.orders import add_line

    view = _order_action(lambda con, config: add_line(con, order_id, sku, quantity, config=config,
                                                      now=datetime.now(UTC)))
    click.echo(json.dumps(view, indent=2))


@orders.command("generate")
@click.argument("order_id")
def orders_generate(order_id: str) -> None:
    """Generate ORDER_ID (NEW -> AWAITING_GENERATION): the Sales Order Request job sends it to the warehouse."""
    from cmp_pipelines.defs.hardware_orders.orders import generate_order

    view = _order_action(lambda con, _: generate_order(con, order_id, now=datetime.now(UTC), cause="cli"))
    click.echo(f"{view['order_id']}: {view['status']}")


@orders.command("show")
@click.argument("order_id")
def orders_show(order_id: str) -> None:
    """ORDER_ID with its lines, billing and status history (JSON)."""
    from cmp_pipelines.defs.hardware_orders.orders import order_view

    click.echo(json.dumps(_order_action(lambda con, _: order_view(con, order_id)), indent=2))


@orders.command("stock")
@click.option("--order", "order_id", default=None, help="Check every line of this order.")
@click.option("--sku", "skus", multiple=True, help="Check this SKU (repeatable); default: the whole catalogue.")
def orders_stock(order_id: str | None, skus: tuple[str, ...]) -> None:
    """Stock check against each product's warehouse, for an order or independently of one."""
    from cmp_pipelines.defs.hardware_orders.stock_check import check_stock
    from cmp_pipelines.defs.hardware_orders.warehouse import StockFileWarehouse

    rows = _order_action(lambda con, config: check_stock(StockFileWarehouse(), config, skus=list(skus), con=con,
                                                         order_id=order_id))
    for r in rows:
        state = "UNKNOWN" if r["in_stock"] is None else ("IN STOCK" if r["in_stock"] else "SHORT")
        available = "?" if r["available"] is None else r["available"]
        click.echo(f"{state:9} {r['sku']:16} {r['warehouse']:10} wanted {r['wanted']:>3} available {available:>5}"
                   + (f"  ({r['problem']})" if r["problem"] else ""))


@orders.command("enrol")
@click.argument("device_id")
def orders_enrol(device_id: str) -> None:
    """Ask for DEVICE_ID (a dispatched handset's IMEI) to be enrolled on the next enrolment batch."""
    from cmp_pipelines.defs.hardware_orders.enrolment import request_enrolment

    view = _order_action(lambda con, _: request_enrolment(con, device_id, now=datetime.now(UTC)))
    click.echo(f"{view['device_id']}: {view['enrolment_status']}")


@orders.command("unenrol")
@click.argument("device_id")
def orders_unenrol(device_id: str) -> None:
    """Ask for the enrolled handset DEVICE_ID to be unenrolled on the next enrolment batch."""
    from cmp_pipelines.defs.hardware_orders.enrolment import request_unenrolment

    view = _order_action(lambda con, _: request_unenrolment(con, device_id, now=datetime.now(UTC)))
    click.echo(f"{view['device_id']}: {view['enrolment_status']}")


@orders.command("device")
@click.argument("device_id")
def orders_device(device_id: str) -> None:
    """A dispatched device, its enrolment status and its enrolment requests (JSON)."""
    from cmp_pipelines.defs.hardware_orders.enrolment import device_view

    click.echo(json.dumps(_order_action(lambda con, _: device_view(con, device_id)), indent=2))


@main.command("run-enrolment-requests")
@_date_option
def run_enrolment_requests(day: str | None) -> None:
    """Run the Device Enrolment Request job for one day, as its daily schedule does (idempotent)."""
    _run_day("device_enrolment_request_job", day, "DER", "enrolment request(s)")


@demo.command("orders")
def demo_orders() -> None:
    """Stock files, four generated hardware orders sent by the Sales Order Request job (one fails its fraud
    check), and one more order left for the sensor."""
    from cmp_pipelines.defs.hardware_orders.sales_orders import pending_generation, request_batch_id
    from cmp_pipelines.demo import hardware as demo_hardware

    config = _hardware()
    now = datetime.now(UTC)
    for path in demo_hardware.write_stock_files(config, paths().data_dir / "stock"):
        click.echo(path)
    with _connect() as con:
        if con.execute("SELECT count(*) FROM hw_orders").fetchone()[0]:
            click.echo("demo orders exist already")
            return
        created = demo_hardware.create_orders(con, config, now)
        up_to = pending_generation(con)
    _dagster_home()
    import dagster as dg

    from cmp_pipelines.defs.hardware_orders.assets import sales_order_request_partitions
    from cmp_pipelines.lib.headless import run_partition

    with dg.DagsterInstance.get() as instance:  # what the sensor does: a partition for the batch, then its run
        instance.add_dynamic_partitions(sales_order_request_partitions.name, [request_batch_id(up_to)])
        outcome = run_partition("sales_order_request_job", request_batch_id(up_to), instance=instance)
    if not outcome.success:
        _fail(f"sales_order_request_job {request_batch_id(up_to)} failed: {outcome.error}")
    with _connect() as con:
        created += demo_hardware.create_orders(con, config, now, demo_hardware.ORDERS[2:3])
        for order_id in created:
            status = con.execute("SELECT status, coalesce(error_reason, '') FROM hw_orders WHERE order_id = ?",
                                 [order_id]).fetchone()
            click.echo(f"{order_id}: {status[0]} {status[1]}".rstrip())


@demo.command("warehouse-dispatch")
def demo_warehouse_dispatch() -> None:
    """A response CSV per warehouse for the orders awaiting dispatch (a failed line, a unit still to come, a bad
    IMEI), encrypted into data/inbound/warehouse_dispatch/<WAREHOUSE>/."""
    from cmp_pipelines.core.crypto.keyring import PartnerKeyring
    from cmp_pipelines.demo import hardware as demo_hardware
    from cmp_pipelines.lib.resources.file_store import LocalFileStore

    with _connect() as con:
        written = demo_hardware.warehouse_response_files(con, LocalFileStore(), PartnerKeyring(paths().keys_dir),
                                                         datetime.now(UTC))
    if not written:
        _fail("no order awaiting dispatch: run `cmp-pipelines demo orders` first")
    for path in written:
        click.echo(path)


from cmp_pipelines.cli.api import api as _api_commands  # noqa: E402 - the HTTP API's commands (issue 5)

main.add_command(_api_commands)


if __name__ == "__main__":
    sys.exit(main())
