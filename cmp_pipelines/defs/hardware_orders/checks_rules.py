"""Checks on what customers type and warehouses send: IMEI check digits and UK postcodes.

Each rule exists twice, as Python for a single request (the API, the CLI) and as DuckDB SQL for a
whole file or batch at once; the unit tests hold the two to the same answers.
"""

from __future__ import annotations

import re

from cmp_pipelines.core.cards import luhn_valid

IMEI = re.compile(r"^[0-9]{15}$")
# Outward code (area, district) then inward code (sector, unit); GIR 0AA is the one historic exception.
UK_POSTCODE = r"^(GIR ?0AA|[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2})$"
_UK_POSTCODE = re.compile(UK_POSTCODE)


def imei_valid(imei: str | None) -> bool:
    """15 digits whose last is the Luhn check digit of the first 14 (3GPP TS 23.003)."""
    return bool(imei) and bool(IMEI.match(imei)) and luhn_valid(imei)


def imei_check_digit(body: str) -> str:
    """The Luhn check digit that completes a 14-digit IMEI body (for demo data and tests)."""
    total = sum(int(d) if i % 2 == 0 else (2 * int(d)) // 10 + (2 * int(d)) % 10 for i, d in enumerate(body))
    return str((10 - total % 10) % 10)


def imei_valid_sql(column: str) -> str:
    """The same rule as a DuckDB boolean expression over `column` (NULL counts as invalid)."""
    digit = f"substr({column}, 15 - i, 1)::INTEGER"
    return (
        f"CASE WHEN coalesce(regexp_full_match({column}, '[0-9]{{15}}'), FALSE) THEN "
        f"list_sum(list_transform(range(15), lambda i: CASE WHEN i % 2 = 0 THEN {digit} "
        f"WHEN {digit} < 5 THEN 2 * {digit} ELSE 2 * {digit} - 9 END)) % 10 = 0 ELSE FALSE END"
    )


def normalise_postcode(text: str | None) -> str | None:
    """Upper case, outward and inward code separated by one space: ' sw1a1aa ' -> 'SW1A 1AA'."""
    if text is None:
        return None
    compact = re.sub(r"\s+", "", text).upper()
    return f"{compact[:-3]} {compact[-3:]}" if len(compact) > 3 else compact


def normalise_postcode_sql(column: str) -> str:
    compact = f"upper(regexp_replace({column}, '\\s+', '', 'g'))"
    return f"CASE WHEN length({compact}) > 3 THEN left({compact}, -3) || ' ' || right({compact}, 3) ELSE {compact} END"


def uk_postcode_valid(text: str | None) -> bool:
    return text is not None and bool(_UK_POSTCODE.match(normalise_postcode(text) or ""))


def uk_postcode_valid_sql(column: str) -> str:
    return f"coalesce(regexp_full_match({normalise_postcode_sql(column)}, '{UK_POSTCODE.strip('^$')}'), FALSE)"
