"""Money as integer minor units; files carry exact decimal strings with two places. Never a float."""

from __future__ import annotations

import re

AMOUNT_PATTERN = re.compile(r"^(0|[1-9][0-9]{0,11})\.[0-9]{2}$")


class MoneyError(ValueError):
    pass


def parse_amount(text: str) -> int:
    """'12.34' -> 1234. Rejects signs, exponents and any precision other than two places."""
    if not isinstance(text, str) or not AMOUNT_PATTERN.fullmatch(text):
        raise MoneyError(f"amount {text!r} is not a decimal string with exactly two decimal places")
    units, cents = text.split(".")
    return int(units) * 100 + int(cents)


def format_minor(minor: int) -> str:
    sign = "-" if minor < 0 else ""
    units, cents = divmod(abs(int(minor)), 100)
    return f"{sign}{units}.{cents:02d}"
