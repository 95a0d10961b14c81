"""Setting how an account pays: payment type, card on file and approved card refunds.

These are the functions the CLI and the HTTP API call. A card is only ever a provider token with its
last four digits and expiry: anything that looks like a card number is refused and never echoed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime

import duckdb

from cmp_pipelines.core.cards import find_pan, mask_pans_in
from cmp_pipelines.core.config import PAYMENT_TYPES, Partner, PaymentTermsConfig
from cmp_pipelines.core.db.connection import transaction
from cmp_pipelines.core.money import parse_amount

CARD_FEED = "card_rejections"  # a card provider is a partner that sends us rejection files
TOKEN = re.compile(r"^[A-Za-z0-9_-]{6,64}$")
LAST_FOUR = re.compile(r"^[0-9]{4}$")
EXPIRY = re.compile(r"^(?:(?P<mm>0[1-9]|1[0-2])/(?P<yy>[0-9]{2})|(?P<yyyy>[0-9]{4})-(?P<mm2>0[1-9]|1[0-2]))$")


class SetupError(ValueError):
    """A refused set-up request; `field` names the input at fault (the API maps it to a problem detail)."""

    def __init__(self, field: str, message: str, status: int = 422):
        message = mask_pans_in(message) or message  # a refusal may quote what was typed: never a card number
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status = field, message, status


@dataclass(frozen=True)
class Card:
    provider: str
    card_token: str
    last_four: str | None
    expiry: str | None  # YYYY-MM


def card_providers(partners: dict[str, Partner]) -> list[str]:
    return sorted(p.partner_id for p in partners.values() if CARD_FEED in p.feeds)


ACCOUNT_NUMBER = re.compile(r"^[A-Z0-9]{1,20}$")


def term_default_allows(terms: PaymentTermsConfig, payment_type: str, security_level: str):
    """The payment term default of `payment_type` (None when none is configured), if `security_level` may use it."""
    default = next((d for d in terms.defaults.values() if d.payment_type == payment_type), None)
    if default is not None and security_level not in default.security_levels:
        raise SetupError("security_level", f"security level {security_level!r} may not use the {payment_type} "
                                           f"payment term default {default.code!r} (allowed: "
                                           f"{', '.join(default.security_levels)})", status=403)
    return default


def create_account(
    con: duckdb.DuckDBPyConnection, account_number: str, name: str, *, terms: PaymentTermsConfig, now: datetime,
    security_level: str, payment_type: str = "MANUAL", currency: str = "GBP",
    email: str | None = None, phone: str | None = None,
) -> dict:
    """A new account gets the payment term its payment type's default names (Payments module), provided the
    creating user's security level may use that default. Card and direct debit collection start once a card or
    mandate is registered."""
    if not ACCOUNT_NUMBER.fullmatch(account_number or ""):
        raise SetupError("account_number", "must be 1-20 characters of A-Z 0-9")
    if not (name or "").strip() or len(name) > 100:
        raise SetupError("name", "must be 1-100 characters")
    if not re.fullmatch(r"[A-Z]{3}", currency or ""):
        raise SetupError("currency", f"{currency!r} is not an ISO 4217 code (three capital letters)")
    if payment_type not in PAYMENT_TYPES:
        raise SetupError("payment_type", f"{payment_type!r} is not a payment type; use one of "
                                         f"{', '.join(PAYMENT_TYPES)}")
    check_contact(email, phone)
    default = term_default_allows(terms, payment_type, security_level)
    with transaction(con):
        if con.execute("SELECT 1 FROM accounts WHERE account_number = ?", [account_number]).fetchone():
            raise SetupError("account_number", f"account {account_number} already exists", status=409)
        con.execute("INSERT INTO accounts (account_number, name, currency, payment_type, payment_term, created_at, "
                    "email, phone) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [account_number, name.strip(), currency, payment_type, default and default.code, now, email, phone])
    return payment_profile(con, account_number)


CONTACT_EMAIL = re.compile(r"[^@\s]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
CONTACT_PHONE = re.compile(r"\+?[0-9]{7,15}")


def check_contact(email: str | None, phone: str | None) -> None:
    """Communications go to this address (and, later, phone); a malformed one would only fail at sending."""
    if email is not None and (len(email) > 254 or not CONTACT_EMAIL.fullmatch(email)):
        raise SetupError("email", f"{email!r} is not an e-mail address")
    if phone is not None and not CONTACT_PHONE.fullmatch(phone):
        raise SetupError("phone", f"{phone!r} is not a phone number (7-15 digits, an optional leading +)")


def require_account(con: duckdb.DuckDBPyConnection, account_number: str) -> tuple[str, str]:
    row = con.execute(
        "SELECT payment_type, status FROM accounts WHERE account_number = ? AND NOT is_suspense", [account_number]
    ).fetchone()
    if row is None:
        raise SetupError("account_number", f"account {account_number!r} does not exist", status=404)
    return row


def validate_card(card_token: str, last_four: str | None, expiry: str | None, provider: str | None,
                  partners: dict[str, Partner], today: date) -> Card:
    """The card as it would be registered, or a SetupError: no database, so the API checks it before queueing."""
    if find_pan(card_token) or (last_four and find_pan(last_four)):
        raise SetupError("card_token", f"{mask_pans_in(card_token)!r} looks like a card number; register the "
                                       "provider's token, never the card number")
    if not TOKEN.fullmatch(card_token):
        raise SetupError("card_token", "must be the provider's token: 6-64 letters, digits, '_' or '-'")
    if last_four is not None and not LAST_FOUR.fullmatch(last_four):
        raise SetupError("last_four", "must be exactly four digits")
    normalised = None
    if expiry is not None:
        match = EXPIRY.fullmatch(expiry)
        if not match:
            raise SetupError("expiry", f"{expiry!r} is not a card expiry (MM/YY or YYYY-MM)")
        year = int(match["yyyy"]) if match["yyyy"] else 2000 + int(match["yy"])
        month = int(match["mm"] or match["mm2"])
        if (year, month) < (today.year, today.month):
            raise SetupError("expiry", f"the card expired in {year}-{month:02d}")
        normalised = f"{year}-{month:02d}"
    providers = card_providers(partners)
    if provider is None:
        if len(providers) != 1:
            raise SetupError("provider", f"name the card provider; configured providers: {', '.join(providers)}")
        provider = providers[0]
    elif provider not in providers:
        raise SetupError("provider", f"{provider!r} is not a configured card provider "
                                     f"(partners with feed {CARD_FEED!r}: {', '.join(providers) or 'none'})")
    return Card(provider, card_token, last_four, normalised)


def register_card(
    con: duckdb.DuckDBPyConnection, account_number: str, card_token: str, *, partners: dict[str, Partner],
    now: datetime, last_four: str | None = None, expiry: str | None = None, provider: str | None = None,
) -> Card:
    require_account(con, account_number)
    card = validate_card(card_token, last_four, expiry, provider, partners, now.date())
    con.execute(
        """
        INSERT INTO payment_cards VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT (account_number) DO UPDATE SET provider = excluded.provider, card_token = excluded.card_token,
            last_four = excluded.last_four, expiry = excluded.expiry, registered_at = excluded.registered_at
        """,
        [account_number, card.provider, card.card_token, card.last_four, card.expiry, now],
    )
    return card


def set_payment_type(
    con: duckdb.DuckDBPyConnection, account_number: str, payment_type: str, *, partners: dict[str, Partner],
    now: datetime, cause: str, card_token: str | None = None, last_four: str | None = None,
    expiry: str | None = None, provider: str | None = None,
) -> dict:
    """Recurring card needs a card on file (registered now with `card_token`, or earlier)."""
    if payment_type not in PAYMENT_TYPES:
        raise SetupError("payment_type", f"{payment_type!r} is not a payment type; use one of "
                                         f"{', '.join(PAYMENT_TYPES)}")
    if card_token is None and (last_four or expiry or provider):
        raise SetupError("card_token", "last four, expiry and provider describe a card token; give the token too")
    with transaction(con):
        old_type, _ = require_account(con, account_number)
        if card_token is not None:
            register_card(con, account_number, card_token, partners=partners, now=now, last_four=last_four,
                          expiry=expiry, provider=provider)
        if payment_type == "RECURRING_CARD" and not con.execute(
            "SELECT count(*) FROM payment_cards WHERE account_number = ?", [account_number]
        ).fetchone()[0]:
            raise SetupError("card_token", "recurring card payment needs the provider's card token")
        if payment_type == "DIRECT_DEBIT" and not con.execute(
            "SELECT count(*) FROM mandates WHERE account_number = ? AND status IN "
            "('PENDING_SUBMISSION', 'SUBMITTED', 'ACTIVE', 'AMENDMENT_PENDING')", [account_number]
        ).fetchone()[0]:
            raise SetupError("payment_type", "direct debit needs a live mandate: create one for the account first")
        if old_type != payment_type:
            con.execute("UPDATE accounts SET payment_type = ? WHERE account_number = ?", [payment_type, account_number])
            con.execute("INSERT INTO payment_type_changes VALUES (?, ?, ?, ?, ?)",
                        [account_number, old_type, payment_type, cause, now])
    return payment_profile(con, account_number)


def payment_profile(con: duckdb.DuckDBPyConnection, account_number: str) -> dict:
    row = con.execute(
        """
        SELECT a.payment_type, a.suspended_until::VARCHAR, c.provider, c.card_token, c.last_four, c.expiry,
               a.payment_term
        FROM accounts a LEFT JOIN payment_cards c USING (account_number) WHERE a.account_number = ?
        """,
        [account_number],
    ).fetchone()
    if row is None:
        raise SetupError("account_number", f"account {account_number!r} does not exist", status=404)
    card = None if row[2] is None else {"provider": row[2], "card_token": row[3], "last_four": row[4],
                                        "expiry": row[5]}
    return {"account_number": account_number, "payment_type": row[0], "payment_term": row[6],
            "suspended_until": row[1], "card": card}


def validate_refund(amount: object, due_on: object = None, reason: object = None) -> int:
    """The refund's amount in minor units, or a SetupError: no database, so the API checks it before queueing."""
    if not isinstance(amount, str):
        raise SetupError("amount", "is required: a decimal string with two places, e.g. \"12.50\"")
    try:
        amount_minor = parse_amount(amount)
    except (ValueError, TypeError) as exc:
        raise SetupError("amount", f"{amount!r} is not an amount with two decimal places") from exc
    if amount_minor <= 0:
        raise SetupError("amount", "a refund must be more than 0.00")
    if due_on is not None and not isinstance(due_on, date):
        try:
            date.fromisoformat(str(due_on))
        except ValueError:
            raise SetupError("due_on", f"{due_on!r} is not a date (YYYY-MM-DD)") from None
    if reason is not None and find_pan(str(reason)):
        raise SetupError("reason", "looks like a card number; card numbers are never accepted here")
    return amount_minor


def approve_card_refund(
    con: duckdb.DuckDBPyConnection, account_number: str, amount: str, *, now: datetime, due_on: date | None = None,
    reason: str | None = None,
) -> str:
    """An approved refund to the card on file, paid by the CARD-mode extract on or after `due_on`."""
    require_account(con, account_number)
    amount_minor = validate_refund(amount, due_on, reason)
    if not con.execute("SELECT count(*) FROM payment_cards WHERE account_number = ?", [account_number]).fetchone()[0]:
        raise SetupError("account_number", f"account {account_number} has no card on file to refund to")
    with transaction(con):
        sequence = con.execute("SELECT count(*) + 1 FROM card_refunds WHERE account_number = ?",
                               [account_number]).fetchone()[0]
        refund_id = f"RF{account_number}-{sequence:03d}"
        currency = con.execute("SELECT currency FROM accounts WHERE account_number = ?", [account_number]).fetchone()[0]
        con.execute("INSERT INTO card_refunds VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [refund_id, account_number, amount_minor, currency, due_on or now.date(),
                     mask_pans_in(reason), now])
    return refund_id


def refund_view(con: duckdb.DuckDBPyConnection, refund_id: str) -> dict:
    row = con.execute("SELECT refund_id, account_number, minor_to_decimal(amount_minor), currency, due_on::VARCHAR, "
                      "reason FROM card_refunds WHERE refund_id = ?", [refund_id]).fetchone()
    return dict(zip(("refund_id", "account_number", "amount", "currency", "due_on", "reason"), row, strict=True))
