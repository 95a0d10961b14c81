"""Time the card-number scan of a 1M-record NRP file's columns (`with_shape_and_card_numbers`), as the load step
runs it, and of a hard column where every value holds 13+ digits so every value reaches the exact check.

    .venv/bin/python benchmarks/pan_scan.py [--records 1000000] [--repeat 5]

Prints the median of the repeats in seconds; run it on two checkouts to compare detectors.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pyarrow as pa


def nrp_table(records: int, seed: int = 42) -> pa.Table:
    """The NRP bench's column shapes (benchmarks/run.py `_payments`), a few card numbers spread through."""
    rng = np.random.default_rng(seed)
    account = rng.integers(1, 1001, records)
    refs = rng.integers(1000, 10000, records)
    keep = rng.random(records) < 0.5
    reference = [f"PP {r}" if k else None for r, k in zip(refs.tolist(), keep.tolist(), strict=True)]
    for i in range(0, records, max(1, records // 5)):
        reference[i] = "card 4111 1111 1111 1111 12/29"
    return pa.table({
        "record_id": [f"R{k}" for k in range(1, records + 1)],
        "account_number": [f"ACC{a:08d}" for a in account.tolist()],
        "invoice_number": [f"INV{a:08d}1" for a in account.tolist()],
        "amount": [f"{m // 100}.{m % 100:02d}" for m in rng.integers(100, 20001, records).tolist()],
        "payment_date": ["2026-11-20T14:03:00Z"] * records,
        "payment_method": ["CASH"] * records,
        "reference": reference,
    })


def hard_column(records: int, seed: int = 7) -> pa.Array:
    """Every value a run of 13+ digits (a date, an amount and an order number): each one is checked exactly."""
    rng = np.random.default_rng(seed)
    numbers = rng.integers(10**8, 10**9, records).tolist()
    return pa.array([f"paid 01.12.2026 {n} 20.00" for n in numbers], pa.string())


def _median(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    from cmp_pipelines.core.files.record_file import card_number_masks, with_shape_and_card_numbers

    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-hard", action="store_true", help="Only the NRP columns.")
    args = parser.parse_args()
    table = nrp_table(args.records)
    hard = hard_column(args.records)
    scanned = tuple(name for name in table.column_names)
    flagged = with_shape_and_card_numbers(table, {}, scanned).column("pan_field").null_count
    print(f"NRP columns, {args.records:,} records, {args.records - flagged} flagged: "
          f"{_median(lambda: with_shape_and_card_numbers(table, {}, scanned), args.repeat):.3f} s")
    if args.skip_hard:
        return
    print(f"hard column, {args.records:,} values with 13+ digit runs, {len(card_number_masks(hard))} flagged: "
          f"{_median(lambda: card_number_masks(hard), args.repeat):.3f} s")


if __name__ == "__main__":
    main()
