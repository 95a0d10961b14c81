"""Small helpers for what every materialisation shows in the Dagster UI: Markdown previews, quarantine failures."""

import dagster as dg


def markdown_table(columns: list[str], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join("" if value is None else str(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) if rows else "_no records_"


def quarantine_failure(quarantined) -> dg.Failure:
    """The run fails with the quarantine's reason in the UI; retrying cannot help a bad file."""
    return dg.Failure(
        description=f"File quarantined ({quarantined.code}): {quarantined.message}",
        metadata={"error_code": quarantined.code, "error": quarantined.message,
                  "quarantined_file": quarantined.quarantined_path},
        allow_retries=False,
    )
