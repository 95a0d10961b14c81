"""The rule-based fraud check of a delivery name and address, as set-based SQL over a batch of orders.

Input relation `deliveries(order_id, delivery_name, address_line1, address_line2, town, postcode)` and
`deny(kind, value)` (kind NAME: upper case, single spaces; kind POSTCODE: normalised). Every failed rule is
named in `reason`, so an agent can correct the order in one go.
"""

from __future__ import annotations

from cmp_pipelines.defs.hardware_orders.checks_rules import normalise_postcode_sql, uk_postcode_valid_sql

_NAME = "upper(trim(regexp_replace(coalesce(d.delivery_name, ''), '\\s+', ' ', 'g')))"

RULES: tuple[tuple[str, str], ...] = (
    ("NO_DELIVERY_NAME", f"NOT regexp_matches({_NAME}, '[A-Z].*[A-Z]')"),
    ("NO_ADDRESS_LINE", "trim(coalesce(d.address_line1, '')) = ''"),
    ("NO_TOWN", "trim(coalesce(d.town, '')) = ''"),
    ("BAD_POSTCODE", f"NOT {uk_postcode_valid_sql('d.postcode')}"),
    ("DENIED_NAME", f"{_NAME} IN (SELECT value FROM deny WHERE kind = 'NAME')"),
    ("DENIED_POSTCODE", f"{normalise_postcode_sql('d.postcode')} IN (SELECT value FROM deny WHERE kind = 'POSTCODE')"),
)
_MESSAGES = {
    "NO_DELIVERY_NAME": "no delivery name",
    "NO_ADDRESS_LINE": "no address line",
    "NO_TOWN": "no town",
    "BAD_POSTCODE": "postcode ' || coalesce(q(d.postcode), 'missing') || ' is not a UK postcode",
    "DENIED_NAME": "delivery name is on the deny list",
    "DENIED_POSTCODE": "postcode ' || q(d.postcode) || ' is on the deny list",
}

FRAUD_SQL = (
    "SELECT order_id, reason IS NULL AS passed, reason FROM (SELECT d.order_id, nullif(concat_ws('; ', "
    + ", ".join(f"CASE WHEN {rule} THEN '{code}: {_MESSAGES[code]}' END" for code, rule in RULES)
    + "), '') AS reason FROM deliveries d) ORDER BY order_id"
)
