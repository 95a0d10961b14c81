"""Small helpers for what every materialisation shows in the Dagster UI: Markdown previews, quarantine failures."""

import warnings

import dagster as dg

from cmp_pipelines.core.money import format_minor


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


def awaiting_notice_metadata(waiting) -> dict:
    """Invoices due that wait for their advance notice (core/notices.Waiting), as the card and DD steps show them."""
    return {
        "awaiting_notice": dg.MetadataValue.int(waiting.count),
        "awaiting_notice_amount": format_minor(waiting.total_minor),
        "awaiting_notice_detail": dg.MetadataValue.json(
            {"no_notice": waiting.no_notice, "notice_not_sent": waiting.not_sent,
             "notice_too_recent": waiting.too_recent}),
    }


OWNER = "team:billing-operations"  # the users who answer for every flow's assets in the UI


def flow_assets(assets: list, flow: str) -> list:
    """A flow's assets as the code location shows them: owned, tagged with their flow (so the catalogue filters
    by flow), and linked to the source lines that define them."""
    owned = dg.map_asset_specs(
        lambda spec: spec.merge_attributes(owners=[OWNER] if OWNER not in spec.owners else [], tags={"flow": flow}),
        assets,
    )
    with warnings.catch_warnings():  # source code references are a beta API; the link is worth it
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.with_source_code_references(owned)
