"""Card-number (PAN) detection: 13-19 digits passing Luhn, allowing the spaces and dashes people type."""

from __future__ import annotations

import re

PAN_CANDIDATE = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
# The same shape for DuckDB's RE2 (no look-around): used to find the few records worth a Luhn check.
PAN_CANDIDATE_SQL = r"\d(?:[ -]?\d){12,18}"


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def find_pan(text: str | None) -> str | None:
    """The first card number in `text`, digits only, or None."""
    if not text:
        return None
    for match in PAN_CANDIDATE.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return digits
    return None


def mask_pan(digits: str) -> str:
    return "*" * (len(digits) - 4) + digits[-4:]


def mask_pans_in(text: str | None) -> str | None:
    """Replace every card number in free text with its masked form, so it can be stored or echoed."""
    if not text:
        return text

    def _mask(match: re.Match[str]) -> str:
        digits = re.sub(r"[ -]", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return mask_pan(digits)
        return match.group()

    return PAN_CANDIDATE.sub(_mask, text)
