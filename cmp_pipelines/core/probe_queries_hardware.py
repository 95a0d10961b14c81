"""What the hardware order probes count; `core/probe_queries.py` evaluates them with the other CMP probes.

Each query may use $day_start (UTC midnight today), $window_start and $now."""

from __future__ import annotations

HARDWARE_PROBE_SQL = {
    "hw_orders_stuck_awaiting_dispatch": """
        SELECT count(*) FROM hw_orders
        WHERE status = 'AWAITING_DISPATCH'
          AND sent_at < $now - to_days((SELECT coalesce(max(stuck_order_days), 5) FROM hw_settings)::INTEGER)
    """,
    "hw_fraud_check_failures_today":
        "SELECT count(*) FROM hw_fraud_checks WHERE NOT passed AND checked_at >= $day_start",
    "hw_enrolment_failures_latest_response": """
        SELECT count(*) FROM hw_enrolment_responses
        WHERE outcome = 'FAILED' AND batch_id = (SELECT batch_id FROM batches WHERE kind = 'ENROLMENT_RESPONSE'
                                                 ORDER BY created_at DESC, rowid DESC LIMIT 1)
    """,
}
