"""The CMP probes: their names, kinds and which way a value trips them. Thresholds live in config."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProbeDefinition:
    probe_id: str
    name: str
    kind: str  # "alert" notifies recipients; "sla" is recorded only
    trips_when: str  # "above": value > threshold; "at_or_below": value <= threshold (e.g. nothing ran)
    description: str
    needs_age: bool = False  # its query counts what is older than the configured older_than_minutes

    def tripped(self, value: int, threshold: int) -> bool:
        return value > threshold if self.trips_when == "above" else value <= threshold


NRP_PROBES: tuple[ProbeDefinition, ...] = (
    ProbeDefinition(
        "nrp_verification_account_allocation",
        "Non Recurring Payments Verification Account Allocation",
        "alert", "above",
        "Payment records in the most recent batch allocated to an account rather than an invoice.",
    ),
    ProbeDefinition(
        "nrp_verification_payments_supplied",
        "Non Recurring Payments Verification Payments Supplied",
        "alert", "above", "Payment files received today that contained no payments.",
    ),
    ProbeDefinition(
        "nrp_batch_completed",
        "Non Recurring Payments Batch Completed",
        "alert", "at_or_below", "Times the Non Recurring Payment job ran today; 0 raises the alert.",
    ),
    ProbeDefinition(
        "nrp_batch_completed_sla",
        "Non Recurring Payments Batch Completed SLA",
        "sla", "above", "CMP configuration errors detected by the Non Recurring Payment job today.",
    ),
    ProbeDefinition(
        "nrp_verification_normal",
        "Non Recurring Payments Verification Normal",
        "alert", "above", "Non-recurring payments received within the configured number of hours.",
    ),
    ProbeDefinition(
        "nrp_verification_no_payment_dates",
        "Non Recurring Payments Verification No Payment Dates",
        "alert", "above", "Records with a null payment date/time in the last batch processed.",
    ),
    ProbeDefinition(
        "nrp_verification_invoice_allocation",
        "Non Recurring Payments Verification Invoice Allocation",
        "alert", "above", "Payment records in the most recent batch allocated to an invoice.",
    ),
    ProbeDefinition(
        "nrp_load_completed",
        "Non Recurring Payments Load Completed",
        "alert", "at_or_below", "Files received by the Non Recurring Payment load daemon today; 0 alerts.",
    ),
)

NRP_DUPLICATE_PROBES: tuple[ProbeDefinition, ...] = (
    ProbeDefinition(
        "nrp_suspected_duplicates_held",
        "Non Recurring Payments Suspected Duplicates Held",
        "alert", "above",
        "Payment records held (not posted) in the window because they repeat a record id, account and amount of "
        "an earlier file of the same partner; an operator releases them with `cmp-pipelines nrp release-held`.",
    ),
)

INBOUND_PROBES: tuple[ProbeDefinition, ...] = (
    ProbeDefinition(
        "inbound_entries_refused",
        "Inbound Entries Refused",
        "alert", "above",
        "Entries refused in the inbound folders in the window (symbolic links, FIFOs, sockets, devices, names the "
        "store cannot keep); each is left where it was for an operator to inspect.",
    ),
)

CARD_PROBES: tuple[ProbeDefinition, ...] = (
    ProbeDefinition(
        "card_extract_produced",
        "Recurring Card Payments Extract Produced",
        "alert", "at_or_below", "CARD-mode extracts written today; 0 raises the alert.",
    ),
    ProbeDefinition(
        "card_extract_totals_mismatch",
        "Recurring Card Payments Extract Totals Match Posting Batch",
        "alert", "above",
        "Extracts written today whose control totals (count, amount) differ from their ledger posting batch.",
    ),
    ProbeDefinition(
        "card_rejection_rate",
        "Recurring Card Payments Rejection Rate",
        "alert", "above",
        "Percent of the extracted transactions rejected by the latest rejection file.",
    ),
    ProbeDefinition(
        "card_advance_notices_unsent",
        "Recurring Card Payments Advance Notices Not Sent",
        "alert", "above",
        "Advance notices of card collections raised more than older_than_minutes ago and still not sent (no e-mail "
        "address, or the dispatcher failing): their invoices wait, uncollected, until the notice goes.",
        needs_age=True,
    ),
    ProbeDefinition(
        "card_rejections_completed_sla",
        "Recurring Payments Rejections Completed SLA",
        "sla", "above", "CMP configuration errors (e.g. unknown reason codes) met by the Rejections job today.",
    ),
)

DD_PROBES: tuple[ProbeDefinition, ...] = (
    ProbeDefinition(
        "auddis_file_produced",
        "Direct Debit AUDDIS File Produced",
        "alert", "at_or_below",
        "AUDDIS runs completed today (a file written, or none needed: nothing pending); 0 raises the alert.",
    ),
    ProbeDefinition(
        "dd_collection_totals_mismatch",
        "Direct Debit Collection Totals Match Posting Batch",
        "alert", "above",
        "Collection files written today whose Standard 18 control totals (count, value) differ from their "
        "ledger posting batch.",
    ),
    ProbeDefinition(
        "dd_advance_notices_unsent",
        "Direct Debit Advance Notices Not Sent",
        "alert", "above",
        "Advance notices of direct-debit collections raised more than older_than_minutes ago and still not sent (no "
        "e-mail address, or the dispatcher failing): their invoices wait, uncollected, until the notice goes.",
        needs_age=True,
    ),
    ProbeDefinition(
        "addacs_unknown_references",
        "Direct Debit ADDACS Unknown References",
        "alert", "above", "ADDACS advices received in the window whose reference matches no mandate.",
    ),
    ProbeDefinition(
        "arudd_return_rate",
        "Direct Debit ARUDD Return Rate",
        "alert", "above", "Percent of the collected debits returned by the latest ARUDD report.",
    ),
    ProbeDefinition(
        "arudd_unmapped_return_codes",
        "Direct Debit ARUDD Unmapped Return Codes",
        "alert", "above",
        "Mandates held (not collecting) because an ARUDD return carried a returnCode not mapped in "
        "config/rejection_codes.yaml; each waits for an operator (cmp-pipelines mandates resume|cancel).",
    ),
)

HARDWARE_PROBES: tuple[ProbeDefinition, ...] = (
    ProbeDefinition(
        "hw_orders_stuck_awaiting_dispatch",
        "Hardware Orders Stuck Awaiting Dispatch",
        "alert", "above",
        "Orders still awaiting dispatch more than the configured stuck-order days after they went to the warehouse.",
    ),
    ProbeDefinition(
        "hw_fraud_check_failures_today",
        "Hardware Orders Fraud Check Failures",
        "alert", "above", "Orders that failed the fraud check of their delivery name and address today.",
    ),
    ProbeDefinition(
        "hw_enrolment_failures_latest_response",
        "Device Enrolment Failures",
        "alert", "above", "Devices the manufacturer failed to enrol or unenrol in the latest enrolment response.",
    ),
)

DELIVERY_PROBES: tuple[ProbeDefinition, ...] = (
    ProbeDefinition(
        "deliveries_undelivered",
        "Outbound Documents Undelivered",
        "alert", "above",
        "Outbound documents (posting files, acknowledgements, submissions, extracts, requests) still not delivered "
        "to their partner (PENDING or FAILED) more than older_than_minutes after they were published.",
        needs_age=True,
    ),
    ProbeDefinition(
        "deliveries_unconfirmed",
        "Outbound Documents Sent But Unconfirmed",
        "alert", "above",
        "Documents whose partner answers with a receipt (posting files: the sales ledger's acceptance; Bacs "
        "submissions: the bureau's submission report) sent more than older_than_minutes ago and not confirmed.",
        needs_age=True,
    ),
    ProbeDefinition(
        "ledger_posting_files_missing",
        "Ledger Posting Files Missing",
        "alert", "above",
        "Batches holding ledger postings with no posting file for the sales ledger more than older_than_minutes "
        "after they were created: a run posted, then failed before its file (the partner's acknowledgement may "
        "have gone already). Re-execute the run from failure, or for a release of held duplicates run "
        "`cmp-pipelines nrp release-held` again; the file is written from the postings committed.",
        needs_age=True,
    ),
)

ALL_PROBES = (NRP_PROBES + NRP_DUPLICATE_PROBES + INBOUND_PROBES + CARD_PROBES + DD_PROBES + HARDWARE_PROBES
              + DELIVERY_PROBES)
PROBES_BY_ID = {probe.probe_id: probe for probe in ALL_PROBES}
