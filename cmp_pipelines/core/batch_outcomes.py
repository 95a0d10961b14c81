"""How a loaded batch's records came out: counts by outcome and by problem, for metadata and results."""

from __future__ import annotations

import duckdb


def outcome_counts(con: duckdb.DuckDBPyConnection, table: str, batch_id: str) -> tuple[dict[str, int], dict[str, int]]:
    """({outcome: count}, {problem_code: count}) of `table`'s rows in `batch_id`, in one scan."""
    rows = con.execute(
        f"SELECT outcome, problem_code, count(*) FROM {table} WHERE batch_id = ? GROUP BY ALL ORDER BY ALL",
        [batch_id],
    ).fetchall()
    outcomes: dict[str, int] = {}
    problems: dict[str, int] = {}
    for outcome, problem, count in rows:
        outcomes[outcome] = outcomes.get(outcome, 0) + count
        if problem is not None:
            problems[problem] = problems.get(problem, 0) + count
    return outcomes, dict(sorted(problems.items()))
