"""Device enrolment rules: a dispatched handset's enrolment status, and what each request and answer does.

ENROL_PENDING / UNENROL_PENDING wait for the next Device Enrolment Request batch, which makes them
..._REQUESTED; the manufacturer's answer makes them ENROLLED, UNENROLLED, ENROL_FAILED or UNENROL_FAILED.
"""

from __future__ import annotations

NOT_REQUESTED = "NOT_REQUESTED"

# What an agent may ask for, from which statuses (a handset only; the order need not have asked at first).
ENROL_FROM = ("NOT_REQUESTED", "ENROL_FAILED", "UNENROLLED")
UNENROL_FROM = ("ENROLLED", "UNENROL_FAILED")

# action -> (status while pending, status once sent, the answers a manufacturer may give)
ACTIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "ENROL": ("ENROL_PENDING", "ENROL_REQUESTED", ("ENROLLED", "FAILED")),
    "UNENROL": ("UNENROL_PENDING", "UNENROL_REQUESTED", ("UNENROLLED", "FAILED")),
}

RESULT_STATUS_SQL = (
    "CASE WHEN result = 'FAILED' THEN action || '_FAILED' ELSE result END"  # ENROL_FAILED, UNENROLLED, ...
)

# Judged per record against the request it answers (alias r: the record, q: the request); a request answered
# more than once in a file keeps its first acceptable answer (REPEATED_IN_FILE, in the service).
RESPONSE_RULES: tuple[tuple[str, str, str], ...] = (
    ("MALFORMED_RECORD", "r.shape_error IS NOT NULL", "r.shape_error"),
    ("CARD_NUMBER", "r.pan_field IS NOT NULL",
     "'field ' || r.pan_field || ' holds a card number (' || r.pan_masked || '); it was masked, never stored'"),
    ("UNKNOWN_REQUEST", "q.request_id IS NULL", "'request ' || coalesce(q(r.request_id), 'id missing') || "
                                                "' was never sent'"),
    ("WRONG_MANUFACTURER", "q.manufacturer <> $manufacturer",
     "'request ' || r.request_id || ' went to ' || q.manufacturer"),
    ("DEVICE_MISMATCH", "q.device_id IS DISTINCT FROM r.device_id",
     "'request ' || r.request_id || ' is for device ' || q(q.device_id) || ', not ' || coalesce(q(r.device_id), "
     "'none')"),
    ("BAD_RESULT", "r.result IS NULL OR NOT (CASE q.action WHEN 'ENROL' THEN r.result IN ('ENROLLED', 'FAILED') "
                   "ELSE r.result IN ('UNENROLLED', 'FAILED') END)",
     "'result ' || coalesce(q(r.result), 'missing') || ' does not answer ' || q.action"),
    ("MISSING_REASON", "r.result = 'FAILED' AND r.reason IS NULL", "'a FAILED result needs its reason'"),
    ("ALREADY_ANSWERED", "q.outcome IS NOT NULL",
     "'request ' || r.request_id || ' was already answered ' || q.outcome || ' (' || q.answered_batch_id || ')'"),
)
