"""Great Expectations 1.x over the records of an inbound file's load batch, through the pandas data source (the
SQL one fails on DuckDB 2.0). One piece for every inbound feed: each names its records table, the columns its
suite reads and its suite file (expectations/<name>.json).

GX costs ~3-8 s and 230 MB to import, so it is imported here, inside the call, never at module import.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:  # imported by the run that validates, not by every process loading the definitions
    import duckdb
    import pandas as pd

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class RecordsSuite:
    """Which suite validates which columns of which records table (rows keyed by `batch_id`)."""

    suite: str
    table: str
    columns: tuple[str, ...]

    def __post_init__(self) -> None:
        bad = [n for n in (self.table, *self.columns) if not _IDENTIFIER.match(n)]
        if bad or not self.columns:
            raise ValueError(f"suite {self.suite!r}: table and columns must be plain identifiers, got {bad or '[]'}")


def records_frame(con: duckdb.DuckDBPyConnection, spec: RecordsSuite, file_id: str) -> pd.DataFrame:
    """The suite's columns for every record of the file's load batch, in file order.

    Integers stay integers (nullable Int64): pence never pass through a binary float, even for a range check.
    Strings stay Arrow strings (pandas' pyarrow-backed StringDtype): no Python object per value, and regex, set
    and null expectations run in Arrow compute, ~4x faster on 1M rows than object columns (benchmarks/README.md).
    """
    import pandas as pd

    columns = ", ".join(f"r.{c}" for c in spec.columns)
    with con.cursor() as cursor:  # its own result stream: Arrow straight from the relation, no extra copy
        table = cursor.sql(
            f"SELECT {columns} FROM {spec.table} r JOIN inbound_files f ON f.batch_id = r.batch_id "
            "WHERE f.file_id = $file",
            params={"file": file_id},
        ).to_arrow_table()
    strings = pd.StringDtype("pyarrow")
    return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int64Dtype(),
                                         pa.string(): strings, pa.large_string(): strings}.get)


@dataclass
class ExpectationOutcome:
    expectation: str
    column: str | None
    success: bool
    unexpected_count: int | None
    unexpected_percent: float | None  # a ratio for display only, never money


def load_suite(expectations_dir: Path, name: str) -> dict:
    path = expectations_dir / f"{name}.json"
    try:
        suite = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"expectation suite {path} not found") from exc
    if not isinstance(suite.get("expectations"), list) or not suite["expectations"]:
        raise ValueError(f"{path}: field 'expectations' must be a non-empty list")
    for index, item in enumerate(suite["expectations"]):
        if not (isinstance(item, dict) and isinstance(item.get("type"), str) and isinstance(item.get("kwargs"), dict)):
            raise ValueError(f"{path}: expectations[{index}] needs a string 'type' and a mapping 'kwargs'")
    return suite


def validate_frame(frame: pd.DataFrame, suite: dict) -> list[ExpectationOutcome]:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.execution_engine import pandas_execution_engine
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    # GX hashes every frame under 1 GB for a batch "fingerprint" marker, twice per validation: ~2 s of a
    # 1M-row check spent on metadata we never read. Switch the marker off; validation is unchanged.
    pandas_execution_engine.HASH_THRESHOLD = 0
    context = gx.get_context(mode="ephemeral")
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(globally=False)
    except Exception:  # noqa: BLE001 - progress bars are cosmetic
        pass
    gx_suite = gx.ExpectationSuite(name=suite.get("name", "suite"))
    for item in suite["expectations"]:
        gx_suite.add_expectation_configuration(ExpectationConfiguration(type=item["type"], kwargs=item["kwargs"]))
    source = context.data_sources.add_pandas("cmp")
    batch = source.add_dataframe_asset("batch").add_batch_definition_whole_dataframe("whole").get_batch(
        batch_parameters={"dataframe": frame}
    )
    result = batch.validate(gx_suite)
    outcomes = []
    for item in result.results:
        details = item.result or {}
        outcomes.append(
            ExpectationOutcome(
                expectation=item.expectation_config.type,
                column=item.expectation_config.kwargs.get("column"),
                success=bool(item.success),
                unexpected_count=details.get("unexpected_count"),
                unexpected_percent=details.get("unexpected_percent"),
            )
        )
    return outcomes
