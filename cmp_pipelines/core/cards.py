"""Card-number (PAN) detection: one detector for every field that is stored, written or logged.

A card number hides in free text next to other digits (`4111 1111 1111 1111 12/29`, `5555555555554444 123`,
`paid 01.12.2026 378282246310005`) and behind any separator people or programs type (`5555_5555_5555_4444`,
tabs, commas, no-break or zero-width spaces, Unicode dashes, full-width digits). So a *run* is a maximal stretch
of digits and separators, and the 13-19 digit *windows* inside it are Luhn-checked (see `_windows`), not only
the run as a whole: joining a whole run let a neighbouring date or CVV push it past 19 digits and the card
number through.

Two shapes are never a card number and are exempt, so legitimate values are not refused:
- a window starting with 0: no card scheme issues numbers there (ISO/IEC 7812 major industry identifier 0 is
  "ISO/TC 68 and other industry assignments"), and zero-padded ids (`INV000000107`, `ACC00000042`) abound;
- a window that is a 14-digit timestamp YYYYMMDDhhmmss in 2000-2099 (file names, references); the only
  14-digit PANs, Diners Club's, start with 3.
`:` and `+` are not separators: an ISO time `14:03:00.123456+01:00` would otherwise join a 16-digit run.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from itertools import accumulate

PAN_MIN_DIGITS = 13
PAN_MAX_DIGITS = 19
# Separators inside a card number: whitespace (incl. no-break, thin, ideographic), zero-width characters and
# the soft hyphen, . / \ - _ , ; | and the Unicode dashes and minus sign. One list for Python and Arrow/RE2.
SEPARATOR_CHARS = (
    " \t\n\r\f\v./\\_,;|-"
    "\u00a0\u00ad\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u200b\u200c\u200d"
    "\u2010\u2011\u2012\u2013\u2014\u2015\u2028\u2029\u202f\u205f\u2060\u2212\u3000\ufeff"
)


def _class(escape) -> str:
    return "[" + "".join(escape(c) for c in SEPARATOR_CHARS) + "]"


def _py_escape(char: str) -> str:
    return re.escape(char) if char.isascii() else f"\\u{ord(char):04x}"


def _re2_escape(char: str) -> str:
    return f"\\x{{{ord(char):x}}}" if not char.isalnum() else char


_SEP = _class(_py_escape)
PAN_CANDIDATE = re.compile(rf"\d(?:{_SEP}*\d)*")  # a maximal run of (Unicode decimal) digits and separators
# For Arrow/RE2: a value with a run of 13+ digits somewhere, the few worth the exact window check below.
PAN_CANDIDATE_SQL = rf"\p{{Nd}}(?:{_class(_re2_escape)}*\p{{Nd}}){{{PAN_MIN_DIGITS - 1},}}"
_DIGIT = re.compile(r"\d")
_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)  # Luhn: a doubled digit's contribution


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        total += _DOUBLED[value] if index % 2 else value
    return total % 10 == 0


def _timestamp14(digits: str) -> bool:
    """YYYYMMDDhhmmss in 2000-2099: common in file names and references, and never a card number (the only
    14-digit PANs, Diners Club's, start with 3)."""
    if len(digits) != 14 or not digits.startswith("20"):
        return False
    month, day, hour, minute, second = (int(digits[i:i + 2]) for i in (4, 6, 8, 10, 12))
    return 1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 60


def is_pan(digits: str) -> bool:
    """`digits` (ASCII digits only) is, as a whole, a card number."""
    return (PAN_MIN_DIGITS <= len(digits) <= PAN_MAX_DIGITS and digits[0] != "0" and luhn_valid(digits)
            and not _timestamp14(digits))


def _ascii_digits(run: str) -> tuple[str, list[int]]:
    """The run's digits as ASCII, and each digit's offset in the run (separators dropped)."""
    offsets = [m.start() for m in _DIGIT.finditer(run)]
    digits = "".join(run[i] for i in offsets)
    if not digits.isascii():
        digits = "".join(str(unicodedata.decimal(c)) for c in digits)
    return digits, offsets


# Lengths in the order a window is preferred when several overlap: the common card lengths first.
_LENGTH_ORDER = (16, 15, 14, 19, 13, 17, 18)
_PREFER_UP_TO = 64  # digits in a run up to which the best-shaped window is chosen (all are weighed)
_RANK = {length: rank for rank, length in enumerate(_LENGTH_ORDER)}
_PRINTED_GROUP = range(3, 7)  # 4-4-4-4, 4-6-5, 4-6-4, 4-4-4-4-3: how card numbers are printed and typed


def _windows(n: int, groups: list[tuple[int, int]]) -> Iterator[tuple[int, int, bool]]:
    """(start, end, aligned) of the digit windows that could be a card number in a run of `n` digits made of
    these contiguous digit groups:
    - the whole run, whatever its grouping (`4111 1111 1111 1111`, `41 11 11 ...`);
    - every 13-19 digit window inside one group, so digits glued to a card number do not hide it
      (`41111111111111111229`, `5555555555554444` in `5555555555554444 123`);
    - every window of whole groups of 3-6 digits, as card numbers are printed, so a date, an expiry, a CVV or
      an amount beside one does not hide it (`4111 1111 1111 1111 12/29`).
    A window of whole groups of other sizes (`01.12.2026 123456789`: a date and an order number) is not a
    card number: counting those refused most references that mention a date and an amount."""
    if PAN_MIN_DIGITS <= n <= PAN_MAX_DIGITS:
        yield 0, n, True
    for g_start, g_end in groups:
        for start in range(g_start, g_end - PAN_MIN_DIGITS + 1):
            for length in _LENGTH_ORDER:
                end = start + length
                if end <= g_end and (start, end) != (0, n):
                    yield start, end, start == g_start and end == g_end
    for first, (g_start, _) in enumerate(groups):
        for index in range(first, len(groups)):
            g_start2, g_end = groups[index]
            if g_end - g_start2 not in _PRINTED_GROUP or g_end - g_start > PAN_MAX_DIGITS:
                break
            if g_end - g_start >= PAN_MIN_DIGITS and (g_start, g_end) != (0, n) and g_start2 != g_start:
                yield g_start, g_end, True


def _window(run: str) -> tuple[str, list[int], int, int] | None:
    """(digits, offsets, start, end) of the card number in a run, digits[start:end]; None when there is none.

    Each window is Luhn-checked in O(1) from prefix sums (a 10,000-digit run is still quick). When several
    pass, a whole-group one of a common length is preferred, so the four digits the mask leaves visible are
    the card's last four rather than a CVV's."""
    digits, offsets = _ascii_digits(run)
    n = len(digits)
    if n < PAN_MIN_DIGITS:
        return None
    breaks = [k for k in range(1, n) if offsets[k] != offsets[k - 1] + 1]
    groups = list(zip([0, *breaks], [*breaks, n], strict=True))
    if len(groups) == 2 and groups[1][1] - groups[1][0] == 2 and run[offsets[breaks[0]] - 1] == "." \
            and offsets[breaks[0]] - offsets[breaks[0] - 1] == 2:
        # a decimal amount (`1234567890121.48`, a control total): only its whole units can hold a card number
        n, groups = breaks[0], groups[:1]
        if n < PAN_MIN_DIGITS:
            return None
    if n <= PAN_MAX_DIGITS and is_pan(digits[:n]):
        return digits, offsets, 0, n  # the common case: the run is the card number
    candidates = list(_windows(n, groups)) if n <= _PREFER_UP_TO else _windows(n, groups)
    if not candidates:
        return None  # most runs of a date, an amount and an id: no window to check, no prefix sums to build
    values = [ord(c) - 48 for c in digits]
    # plain[p][i] / doubled[p][i]: sum over positions j < i with j % 2 == p of the digit / its doubled value
    plain = [list(accumulate((v if j % 2 == p else 0 for j, v in enumerate(values)), initial=0)) for p in (0, 1)]
    doubled = [list(accumulate((_DOUBLED[v] if j % 2 == p else 0 for j, v in enumerate(values)), initial=0))
               for p in (0, 1)]
    inside = set()  # a window may not cut a timestamp that opens a digit group (`REJ-20261122010857`)
    for g_start, g_end in groups:
        if g_end - g_start >= 14 and _timestamp14(digits[g_start:g_start + 14]):
            inside.update(range(g_start + 1, g_start + 14))
    best: tuple[int, int, int, int] | None = None  # (not aligned, length rank, start, end): smallest wins
    for start, end, aligned in candidates:
        if digits[start] == "0" or start in inside or end in inside:
            continue
        last, other = (end - 1) % 2, end % 2  # the rightmost digit is not doubled
        if (plain[last][end] - plain[last][start] + doubled[other][end] - doubled[other][start]) % 10:
            continue
        if end - start == 14 and _timestamp14(digits[start:end]):
            continue
        key = (0 if aligned else 1, _RANK[end - start], start, end)
        if n > _PREFER_UP_TO:
            return digits, offsets, start, end  # a huge run: the first card number, not the best-shaped one
        if best is None or key < best:
            best = key
    if best is None:
        return None
    return digits, offsets, best[2], best[3]


def find_pan(text: str | None) -> str | None:
    """The first card number in `text`, ASCII digits only, or None."""
    if not text:
        return None
    for match in PAN_CANDIDATE.finditer(text):
        found = _window(match.group())
        if found:
            digits, _, start, end = found
            return digits[start:end]
    return None


def mask_pan(digits: str) -> str:
    return "*" * (len(digits) - 4) + digits[-4:]


def _masked_run(run: str, found: tuple[str, list[int], int, int]) -> str:
    """The run with the card number as `mask_pan` shows it and every other digit of the run starred too (a
    CVV or expiry typed beside the number is no safer in clear); separators outside the number are kept."""
    digits, offsets, start, end = found
    before = _DIGIT.sub("*", run[:offsets[start]])
    after = _DIGIT.sub("*", run[offsets[end - 1] + 1:])
    return before + mask_pan(digits[start:end]) + after


def scan_pans(text: str | None) -> tuple[str, str] | None:
    """(the first card number, digits only; `text` with every card number masked), or None: one pass for
    the vectorised scan, which needs both for each value it flags."""
    if not text:
        return None
    first: list[str] = []

    def _mask(match: re.Match[str]) -> str:
        run = match.group()
        found = _window(run)
        if found is None:
            return run
        if not first:
            first.append(found[0][found[2]:found[3]])
        return _masked_run(run, found)

    masked = PAN_CANDIDATE.sub(_mask, text)
    return (first[0], masked) if first else None


def mask_pans_in(text: str | None) -> str | None:
    """Replace every card number in free text with its masked form, so it can be stored or echoed."""
    found = scan_pans(text)
    return found[1] if found else text
