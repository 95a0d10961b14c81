"""The record rules of a warehouse dispatch batch, as ordered (problem code, condition, message) SQL triples.

`FORMAT_RULES` judge a record alone, when the file is loaded (alias `r`: the adaptor's record, with the
`pan_field` / `pan_masked` columns of `record_file.with_shape_and_card_numbers`). `MATCH_RULES`
judge it against the order it names, inside the Sales Order Dispatch transaction (aliases `r` record, `o`
order, `l` order line, `p` catalogue product, `$warehouse` the sending warehouse), so two files never judge
against stale state. The first rule a record breaks is its outcome.
"""

from __future__ import annotations

from cmp_pipelines.defs.hardware_orders.checks_rules import imei_valid_sql

ISO_UTC = "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z"

FORMAT_RULES: tuple[tuple[str, str, str], ...] = (
    # a card number where an identifier belongs rejects the record; in free text it is only masked (an IMEI
    # quoted in a warehouse's error text passes the same test)
    ("CARD_NUMBER", "r.pan_field IS NOT NULL AND r.pan_field NOT IN ('error_reason', 'row_problem')",
     "'field ' || r.pan_field || ' holds a card number (' || r.pan_masked || '); it was masked, never stored'"),
    ("UNREADABLE_ROW", "r.row_problem IS NOT NULL", "r.row_problem"),
    ("BAD_STATUS", "r.status IS NULL OR r.status NOT IN ('DISPATCHED', 'ERROR')",
     "'STATUS ' || coalesce(q(r.status), 'is missing') || ': must be SHIPPED or FAILED'"),
    ("MISSING_ORDER", "r.order_id IS NULL", "'ORDER_REF is missing'"),
    ("BAD_LINE_NUMBER", "NOT coalesce(regexp_full_match(r.line_number, '[1-9][0-9]{0,3}'), FALSE)",
     "'LINE_NO ' || coalesce(q(r.line_number), 'is missing') || ': must be an order line number'"),
    ("MISSING_SKU", "r.sku IS NULL", "'SKU is missing'"),
    ("MISSING_DEVICE_ID", "r.status = 'DISPATCHED' AND r.imei IS NULL AND r.serial_number IS NULL",
     "'a shipped unit needs its IMEI (handsets) or serial number'"),
    ("BAD_IMEI", f"r.status = 'DISPATCHED' AND r.imei IS NOT NULL AND NOT {imei_valid_sql('r.imei')}",
     "'IMEI ' || q(r.imei) || ' is not 15 digits with a valid check digit'"),
    ("BAD_DISPATCH_DATE",
     f"r.status = 'DISPATCHED' AND NOT coalesce(regexp_full_match(r.dispatched_at, '{ISO_UTC}'), FALSE)",
     "'DISPATCH_DATE ' || coalesce(q(r.dispatched_at), 'is missing') || ': must be DD/MM/YYYY HH:MM'"),
    ("MISSING_ERROR_REASON", "r.status = 'ERROR' AND r.error_reason IS NULL",
     "'a FAILED row needs its ERROR_TEXT'"),
)

MATCH_RULES: tuple[tuple[str, str, str], ...] = (
    ("UNKNOWN_ORDER", "o.order_id IS NULL", "'order ' || q(r.order_id) || ' does not exist'"),
    ("UNKNOWN_SKU", "p.sku IS NULL", "'SKU ' || q(r.sku) || ' is not in the catalogue'"),
    ("UNKNOWN_LINE", "l.order_id IS NULL",
     "'order ' || r.order_id || ' has no line ' || r.line_number"),
    ("SKU_MISMATCH", "l.sku <> r.sku",
     "'line ' || r.line_number || ' of order ' || r.order_id || ' is ' || l.sku || ', not ' || r.sku"),
    ("WRONG_WAREHOUSE", "l.warehouse <> $warehouse",
     "'line ' || r.line_number || ' of order ' || r.order_id || ' was sent to ' || l.warehouse"),
    ("ORDER_NOT_AWAITING_DISPATCH", "o.status <> 'AWAITING_DISPATCH'",
     "'order ' || r.order_id || ' is ' || o.status || ', not AWAITING_DISPATCH'"),
    ("LINE_ALREADY_RESOLVED", "l.error_reason IS NOT NULL OR l.dispatched_quantity >= l.quantity",
     "'line ' || r.line_number || ' of order ' || r.order_id || ' is already '"
     " || CASE WHEN l.error_reason IS NOT NULL THEN 'in error' ELSE 'fully dispatched' END"),
    ("MISSING_IMEI", "r.status = 'DISPATCHED' AND p.product_type = 'HANDSET' AND r.imei IS NULL",
     "'a handset (' || r.sku || ') needs its IMEI'"),
    ("MISSING_SERIAL", "r.status = 'DISPATCHED' AND p.product_type <> 'HANDSET' AND r.serial_number IS NULL",
     "'a ' || lower(p.product_type) || ' (' || r.sku || ') needs its serial number'"),
)


def first_broken(rules: tuple[tuple[str, str, str], ...]) -> tuple[str, str]:
    """Two SQL expressions: the code and the message of the first rule broken (NULL when none is)."""
    code = "CASE " + " ".join(f"WHEN {condition} THEN '{name}'" for name, condition, _ in rules) + " END"
    message = "CASE " + " ".join(f"WHEN {condition} THEN {text}" for _, condition, text in rules) + " END"
    return code, message
