"""Great Expectations 1.x over a batch, through the pandas data source (the SQL one fails on DuckDB 2.0).

GX costs ~3 s and 230 MB to import, so it is imported here, inside the call, never at module import.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported by the run that validates, not by every process loading the definitions
    import pandas as pd


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
