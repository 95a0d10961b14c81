"""Card-number (PAN) detection: a run of 13-19 digits passing Luhn, whatever spaces, dots, dashes or
slashes people type between them."""

from __future__ import annotations

import re

PAN_CANDIDATE = re.compile(r"\d(?:[ ./-]*\d)*")  # a maximal run of digits and separators
# For Arrow/RE2: runs with at least 13 digits, to find the few values worth a Luhn check.
PAN_MIN_DIGITS = 13
PAN_CANDIDATE_SQL = rf"\d(?:[ ./-]*\d){{{PAN_MIN_DIGITS - 1},}}"
_SEPARATORS = re.compile(r"[ ./-]")


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


def _timestamp14(digits: str) -> bool:
    """YYYYMMDDhhmmss in 2000-2099: common in file names and references, and never a card number (the only
    14-digit PANs, Diners Club's, start with 3)."""
    if len(digits) != 14 or not digits.startswith("20"):
        return False
    month, day, hour, minute, second = (int(digits[i:i + 2]) for i in (4, 6, 8, 10, 12))
    return 1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 60


def is_pan(digits: str) -> bool:
    return PAN_MIN_DIGITS <= len(digits) <= 19 and luhn_valid(digits) and not _timestamp14(digits)


def find_pan(text: str | None) -> str | None:
    """The first card number in `text`, digits only, or None."""
    if not text:
        return None
    for match in PAN_CANDIDATE.finditer(text):
        digits = _SEPARATORS.sub("", match.group())
        if is_pan(digits):
            return digits
    return None


def mask_pan(digits: str) -> str:
    return "*" * (len(digits) - 4) + digits[-4:]


def mask_pans_in(text: str | None) -> str | None:
    """Replace every card number in free text with its masked form, so it can be stored or echoed."""
    if not text:
        return text

    def _mask(match: re.Match[str]) -> str:
        digits = _SEPARATORS.sub("", match.group())
        if is_pan(digits):
            return mask_pan(digits)
        return match.group()

    return PAN_CANDIDATE.sub(_mask, text)
