"""The code location loads, and what it declares (asset keys with their group, owners, tags and kinds, the check
names, the sensors, schedules and jobs) matches the committed snapshot: a change to what an operator sees in the
UI is then a reviewed diff, never a side effect. After an intended change, rewrite the snapshot with
`CMP_UPDATE_SNAPSHOT=1 .venv/bin/pytest tests/platform/test_definitions.py` and commit it."""

from __future__ import annotations

import difflib
import importlib
import json
import os
from pathlib import Path

import dagster as dg

from cmp_pipelines.core.settings import PROJECT_ROOT

SNAPSHOT = Path(__file__).with_name("definitions_snapshot.json")
UPDATE = "CMP_UPDATE_SNAPSHOT"


def load_code_location() -> dg.Definitions:
    """`cmp_pipelines.definitions.defs` as Dagster loads it: a Definitions object, or a `@dg.definitions`
    function (called with the project's component context when it takes one)."""
    found = importlib.import_module("cmp_pipelines.definitions").defs
    if isinstance(found, dg.Definitions):
        return found
    if getattr(found, "has_context_arg", False):
        return dg.ComponentTree.for_project(PROJECT_ROOT).build_defs()
    return found()


def describe(defs: dg.Definitions) -> dict:
    """A stable, JSON-ready description of the specs a change would show in the UI (sorted, no object ids)."""
    graph = defs.resolve_asset_graph()
    assets = {
        spec.key.to_user_string(): {
            "group": spec.group_name,
            "owners": sorted(spec.owners),
            "tags": {k: v for k, v in sorted(spec.tags.items()) if not k.startswith("dagster/kind/")},  # = kinds
            "kinds": sorted(spec.kinds),
            "partitioned": spec.partitions_def is not None,
        }
        for spec in sorted(defs.resolve_all_asset_specs(), key=lambda s: s.key.to_user_string())
    }
    checks: dict[str, list[str]] = {}
    for key in graph.asset_check_keys:
        checks.setdefault(key.asset_key.to_user_string(), []).append(key.name)
    return {
        "assets": assets,
        "checks": {asset: sorted(names) for asset, names in sorted(checks.items())},
        "jobs": sorted(job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__")),
        "sensors": {s.name: {"jobs": sorted(t.job_name for t in s.targets), "default_status": s.default_status.value}
                    for s in defs.sensors or []},
        "schedules": {s.name: {"cron": s.cron_schedule, "timezone": s.execution_timezone, "job": s.job_name,
                               "default_status": s.default_status.value} for s in defs.schedules or []},
    }


def _canonical(description: dict) -> str:
    """Tuples become lists, keys sorted: the text committed and compared."""
    return json.dumps(json.loads(json.dumps(description)), indent=2, sort_keys=True) + "\n"


def test_the_code_location_loads_and_validates():
    defs = load_code_location()
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_all_asset_specs(), "no assets: the defs folder did not load"


def mismatch(committed: str, current: str) -> str | None:
    """None when equal, else the message with a unified diff of the snapshot."""
    if current == committed:
        return None
    diff = "".join(difflib.unified_diff(committed.splitlines(keepends=True), current.splitlines(keepends=True),
                                        fromfile=f"{SNAPSHOT.name} (committed)", tofile="the code location now"))
    return f"the code location's specs changed; if intended, rerun with {UPDATE}=1 and commit the snapshot:\n{diff}"


def test_the_declared_assets_checks_sensors_and_schedules_match_the_snapshot():
    current = _canonical(describe(load_code_location()))
    if os.environ.get(UPDATE) == "1":
        SNAPSHOT.write_text(current)
    assert SNAPSHOT.exists(), f"no snapshot yet: run with {UPDATE}=1 to write {SNAPSHOT.name}"
    problem = mismatch(SNAPSHOT.read_text(), current)
    assert problem is None, problem


def test_a_changed_spec_fails_with_a_diff_naming_it():
    described = json.loads(_canonical(describe(load_code_location())))
    asset = next(iter(described["assets"]))
    before = _canonical(described)
    described["assets"][asset]["group"] = "somewhere_else"
    problem = mismatch(before, _canonical(described))
    assert problem is not None and f"rerun with {UPDATE}=1" in problem
    assert '-      "group": ' in problem and '+      "group": "somewhere_else"' in problem
    assert mismatch(before, before) is None
