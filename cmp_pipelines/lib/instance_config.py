"""The project's dagster.yaml as one instance's own file (no Dagster import: `init` writes it before anything runs).

The storage block names its folder by `$DAGSTER_HOME`, right for `DagsterInstance.get()`; an instance file written
here names its own folder instead, so a process that opens an instance by its folder (a harness, a test holding two)
reads that instance's storage whatever `DAGSTER_HOME` says.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

STORAGE_BASE_DIR = b"      base_dir:\n        env: DAGSTER_HOME\n"
_STORAGE_BLOCK = re.compile(rb"(?:#[^\n]*\n)*storage:\n(?:  [^\n]*\n)+")  # the block and the comment above it


def for_home(source: bytes, home: Path) -> bytes:
    """`source` (the project's dagster.yaml) with its SQLite storage under `home`."""
    if STORAGE_BASE_DIR not in source:
        raise ValueError("dagster.yaml has no `storage` block whose base_dir is $DAGSTER_HOME to name the home in")
    folder = json.dumps(str(Path(home).absolute())).encode()  # a JSON string is a double-quoted YAML scalar
    return source.replace(STORAGE_BASE_DIR, b"      base_dir: " + folder + b"\n", 1)


def write_for_home(home: Path) -> Path:
    """The project's dagster.yaml written into `home` as that instance's own (tests, the bench harness)."""
    from cmp_pipelines.core.settings import PROJECT_ROOT

    target = Path(home) / "dagster.yaml"
    target.write_bytes(for_home((PROJECT_ROOT / "dagster.yaml").read_bytes(), Path(home)))
    return target


def without_storage(source: bytes) -> bytes:
    """`source` without its storage block (and the comment that introduces it): another storage takes its place."""
    kept, removed = _STORAGE_BLOCK.subn(b"", source, count=1)
    if not removed:
        raise ValueError("dagster.yaml has no `storage` block to replace")
    return kept
