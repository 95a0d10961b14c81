"""Card numbers in device files: masked before anything is stored, the record flagged.

A valid IMEI passes the card-number test too (15 digits, Luhn), so in the fields that carry a device's
identity only what is not an IMEI counts as a card number; every other scanned field is checked in full.
"""

from __future__ import annotations

import pyarrow as pa

from cmp_pipelines.core.files.record_file import card_number_masks, with_shape_and_card_numbers
from cmp_pipelines.defs.hardware_orders.checks_rules import imei_valid


def with_card_numbers_masked(records: pa.Table, shape_errors: dict[int, str], scanned: tuple[str, ...],
                             device_fields: tuple[str, ...]) -> pa.Table:
    """`with_shape_and_card_numbers` over `scanned`, then the `device_fields` (IMEIs left as they are)."""
    records = with_shape_and_card_numbers(records, shape_errors, scanned)
    pan_field, pan_masked = records.column("pan_field").to_pylist(), records.column("pan_masked").to_pylist()
    for name in device_fields:
        column = records.column(name).combine_chunks()
        found = {i: hit for i, hit in card_number_masks(column).items() if not imei_valid(column[i].as_py())}
        if not found:
            continue
        values = column.to_pylist()
        for index, (pan, masked) in found.items():
            values[index] = masked
            pan_field[index], pan_masked[index] = pan_field[index] or name, pan_masked[index] or pan
        records = records.set_column(records.schema.get_field_index(name), name, pa.array(values, pa.string()))
    for name, values in (("pan_field", pan_field), ("pan_masked", pan_masked)):
        records = records.set_column(records.schema.get_field_index(name), name, pa.array(values, pa.string()))
    return records
