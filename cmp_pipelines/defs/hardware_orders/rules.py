"""Hardware order rules: statuses, the transitions between them, product types and billing choices.

Pure Python (no Dagster): the services refuse a transition the rules do not allow, and the set-based SQL
joins `TRANSITIONS_SQL` so a batch can never move an order where a single request could not.
"""

from __future__ import annotations

NEW = "NEW"
AWAITING_GENERATION = "AWAITING_GENERATION"
AWAITING_DISPATCH = "AWAITING_DISPATCH"
COMPLETE = "COMPLETE"
ERROR = "ERROR"
STATUSES = (NEW, AWAITING_GENERATION, AWAITING_DISPATCH, COMPLETE, ERROR)

TRANSITIONS: dict[str, tuple[str, ...]] = {
    NEW: (AWAITING_GENERATION,),  # the agent generates the order
    AWAITING_GENERATION: (AWAITING_DISPATCH, ERROR),  # sent to the warehouse(s), or the fraud check failed
    AWAITING_DISPATCH: (COMPLETE, ERROR),  # the warehouse's response
    COMPLETE: (),
    ERROR: (),
}
TRANSITIONS_SQL = "(VALUES " + ", ".join(
    f"('{old}', '{new}')" for old, targets in TRANSITIONS.items() for new in targets
) + ") AS allowed(old_status, new_status)"

PRODUCT_TYPES = ("HANDSET", "PERIPHERAL", "LICENCE")
BILLING_CHOICES = ("IMMEDIATE", "NEXT_INVOICE")  # a ledger charge on completion, or a pending charge

# Workflow events the flows raise (event type, event code).
FRAUD_FAILED_EVENT = ("HARDWARE_ORDER", "FRAUD_CHECK_FAILED")
ORDER_ERROR_EVENT = ("HARDWARE_ORDER", "ORDER_DISPATCH_ERROR")
ENROLMENT_FAILED_EVENT = ("DEVICE_ENROLMENT", "ENROLMENT_FAILED")


class TransitionRefused(ValueError):
    def __init__(self, order_id: str, old: str, new: str):
        allowed = ", ".join(TRANSITIONS.get(old, ())) or "none (final status)"
        super().__init__(f"order {order_id} is {old}: it cannot become {new} (allowed from {old}: {allowed})")
        self.order_id, self.old, self.new = order_id, old, new


def require_transition(order_id: str, old: str, new: str) -> None:
    if new not in TRANSITIONS.get(old, ()):
        raise TransitionRefused(order_id, old, new)
