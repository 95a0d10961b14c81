"""The card-number scan over a file's columns: every PAN found, flagged and masked, whatever share of the
values is long enough to hold one, and nothing else touched."""

from __future__ import annotations

import pyarrow as pa
import pytest

from cmp_pipelines.core.files.record_file import card_number_masks, with_shape_and_card_numbers

PAN = "4111 1111 1111 1111"


@pytest.mark.parametrize("long_share", [0.0, 0.01, 0.5, 1.0])
def test_every_card_number_is_found_whatever_share_of_values_is_long(long_share):
    n = 400
    values = [f"ref-{i}" if i >= n * long_share else f"long reference number {i:06d}" for i in range(n)]
    values[7], values[399], values[200] = f"paid by {PAN}", f"x{PAN.replace(' ', '-')}", None
    found = card_number_masks(pa.array(values, pa.string()))
    assert found == {7: ("************1111", "paid by ************1111"), 399: ("************1111",
                                                                             "x************1111")}


def test_no_value_long_enough_finds_nothing():
    assert card_number_masks(pa.array(["R1", None, "123456789012"], pa.string())) == {}


def test_found_numbers_are_masked_and_flagged_and_the_rest_is_untouched():
    table = pa.table({"record_id": ["R1", "R2", "R3"], "reference": ["plain", f"card {PAN}", None],
                      "note": [f"{PAN}", "x", "y"]})
    out = with_shape_and_card_numbers(table, {3: f"record 3 has a field named {PAN}"}, ("reference", "note"))
    assert out.column("reference").to_pylist() == ["plain", "card ************1111", None]
    assert out.column("note").to_pylist() == ["************1111", "x", "y"]
    assert out.column("pan_field").to_pylist() == ["note", "reference", None]
    assert out.column("pan_masked").to_pylist() == ["************1111", "************1111", None]
    assert out.column("shape_error").to_pylist() == [None, None, "record 3 has a field named ************1111"]
    assert out.column("record_id").to_pylist() == ["R1", "R2", "R3"]
