"""Ordered schema migrations. Append only: a shipped migration is never edited, so every store converges."""

from __future__ import annotations

import duckdb

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "core reference tables",
        """
        CREATE TABLE accounts (
            account_number VARCHAR PRIMARY KEY,
            name VARCHAR NOT NULL,
            currency VARCHAR NOT NULL DEFAULT 'GBP',
            status VARCHAR NOT NULL DEFAULT 'ACTIVE',
            payment_type VARCHAR NOT NULL DEFAULT 'MANUAL',
            is_suspense BOOLEAN NOT NULL DEFAULT FALSE,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE invoices (
            invoice_number VARCHAR PRIMARY KEY,
            account_number VARCHAR NOT NULL,
            issued_on DATE NOT NULL,
            due_on DATE NOT NULL,
            amount_minor BIGINT NOT NULL,
            currency VARCHAR NOT NULL DEFAULT 'GBP'
        );
        CREATE INDEX invoices_account ON invoices(account_number);
        CREATE TABLE partners (
            partner_id VARCHAR NOT NULL,
            feed VARCHAR NOT NULL,
            PRIMARY KEY (partner_id, feed)
        );
        """,
    ),
    (
        2,
        "batches, inbound files and the sales ledger",
        """
        CREATE TABLE inbound_files (
            file_id VARCHAR PRIMARY KEY,
            feed VARCHAR NOT NULL,
            partner VARCHAR NOT NULL,
            file_name VARCHAR NOT NULL,
            received_path VARCHAR NOT NULL,
            ciphertext_sha256 VARCHAR NOT NULL,
            content_sha256 VARCHAR,
            size_bytes BIGINT NOT NULL,
            status VARCHAR NOT NULL,
            batch_id VARCHAR,
            duplicate_of VARCHAR,
            archived_path VARCHAR,
            quarantined_path VARCHAR,
            error_code VARCHAR,
            error VARCHAR,
            received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            completed_at TIMESTAMPTZ
        );
        CREATE TABLE batches (
            batch_id VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,
            feed VARCHAR NOT NULL,
            partner VARCHAR,
            source_file_id VARCHAR,
            parent_batch_id VARCHAR,
            status VARCHAR NOT NULL,
            record_count BIGINT NOT NULL DEFAULT 0,
            total_minor BIGINT NOT NULL DEFAULT 0,
            accepted_count BIGINT NOT NULL DEFAULT 0,
            rejected_count BIGINT NOT NULL DEFAULT 0,
            output_path VARCHAR,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            completed_at TIMESTAMPTZ
        );
        CREATE TABLE nrp_records (
            batch_id VARCHAR NOT NULL,
            position BIGINT NOT NULL,
            record_id VARCHAR,
            account_number VARCHAR,
            invoice_number VARCHAR,
            amount_minor BIGINT,
            currency VARCHAR,
            payment_date TIMESTAMPTZ,
            payment_method VARCHAR,
            reference VARCHAR,
            outcome VARCHAR NOT NULL,
            allocation VARCHAR,
            ledger_account VARCHAR,
            reason_code VARCHAR,
            reason VARCHAR,
            PRIMARY KEY (batch_id, position)
        );
        CREATE SEQUENCE ledger_posting_seq;
        CREATE TABLE ledger_postings (
            posting_id BIGINT NOT NULL DEFAULT nextval('ledger_posting_seq'),
            idempotency_key VARCHAR NOT NULL UNIQUE,
            account_number VARCHAR NOT NULL,
            invoice_number VARCHAR,
            kind VARCHAR NOT NULL,
            amount_minor BIGINT NOT NULL,
            currency VARCHAR NOT NULL,
            batch_id VARCHAR NOT NULL,
            source_ref VARCHAR,
            effective_at TIMESTAMPTZ,
            posted_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        3,
        "workflow events, job errors and probe results",
        """
        CREATE SEQUENCE workflow_event_seq;
        CREATE TABLE workflow_events (
            event_id BIGINT NOT NULL DEFAULT nextval('workflow_event_seq'),
            event_type VARCHAR NOT NULL,
            event_code VARCHAR NOT NULL,
            account_number VARCHAR,
            source_ref VARCHAR,
            detail VARCHAR,
            raised_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE job_errors (
            job VARCHAR NOT NULL,
            category VARCHAR NOT NULL,
            source_ref VARCHAR,
            detail VARCHAR NOT NULL,
            raised_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE job_runs (
            job VARCHAR NOT NULL,
            batch_id VARCHAR,
            started_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE probe_results (
            probe_id VARCHAR NOT NULL,
            probe_name VARCHAR NOT NULL,
            probe_type VARCHAR NOT NULL,
            value BIGINT NOT NULL,
            threshold BIGINT NOT NULL,
            tripped BOOLEAN NOT NULL,
            notified BOOLEAN NOT NULL,
            detail VARCHAR,
            evaluated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE config_probes (
            probe_id VARCHAR PRIMARY KEY,
            threshold BIGINT NOT NULL,
            window_hours INTEGER NOT NULL,
            recipients VARCHAR[] NOT NULL
        );
        """,
    ),
    (
        4,
        "the partner's own file id, to refuse a resent file whose bytes differ",
        """
        ALTER TABLE inbound_files ADD COLUMN header_file_id VARCHAR;
        """,
    ),
    (
        5,
        "recurring card payments: cards on file, refunds, extracted transactions, rejections, communications",
        """
        ALTER TABLE accounts ADD COLUMN suspended_until DATE;
        CREATE TABLE payment_cards (
            account_number VARCHAR PRIMARY KEY,
            provider VARCHAR NOT NULL,
            card_token VARCHAR NOT NULL,
            last_four VARCHAR,
            expiry VARCHAR,
            registered_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE payment_type_changes (
            account_number VARCHAR NOT NULL,
            old_type VARCHAR NOT NULL,
            new_type VARCHAR NOT NULL,
            cause VARCHAR NOT NULL,
            changed_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE card_refunds (
            refund_id VARCHAR PRIMARY KEY,
            account_number VARCHAR NOT NULL,
            amount_minor BIGINT NOT NULL,
            currency VARCHAR NOT NULL,
            due_on DATE NOT NULL,
            reason VARCHAR,
            approved_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE card_transactions (
            transaction_id VARCHAR PRIMARY KEY,
            batch_id VARCHAR NOT NULL,
            business_date DATE NOT NULL,
            provider VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            account_number VARCHAR NOT NULL,
            invoice_number VARCHAR,
            refund_id VARCHAR,
            amount_minor BIGINT NOT NULL,
            currency VARCHAR NOT NULL,
            card_token VARCHAR NOT NULL,
            attempt INTEGER NOT NULL,
            first_transaction_id VARCHAR NOT NULL,
            due_on DATE NOT NULL,
            status VARCHAR NOT NULL,
            reason_code VARCHAR,
            rejection_batch_id VARCHAR,
            retry_due_on DATE
        );
        CREATE TABLE card_rejections (
            batch_id VARCHAR NOT NULL,
            position BIGINT NOT NULL,
            record_id VARCHAR,
            transaction_id VARCHAR,
            account_number VARCHAR,
            amount_minor BIGINT,
            reason_code VARCHAR,
            rejected_at TIMESTAMPTZ,
            outcome VARCHAR NOT NULL,
            decline VARCHAR,
            attempt INTEGER,
            retry_due_on DATE,
            problem_code VARCHAR,
            problem VARCHAR,
            PRIMARY KEY (batch_id, position)
        );
        CREATE TABLE customer_communications (
            batch_id VARCHAR NOT NULL,
            account_number VARCHAR NOT NULL,
            template VARCHAR NOT NULL,
            source_ref VARCHAR NOT NULL,
            body VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (template, source_ref)
        );
        CREATE TABLE config_rejection_codes (
            code VARCHAR PRIMARY KEY,
            description VARCHAR NOT NULL,
            reason_type VARCHAR NOT NULL,
            reason_code VARCHAR NOT NULL,
            decline VARCHAR NOT NULL,
            retries INTEGER NOT NULL,
            suspension_days INTEGER NOT NULL,
            retry_event_type VARCHAR,
            retry_event_code VARCHAR,
            cancellation_event_type VARCHAR,
            cancellation_event_code VARCHAR,
            refund_event_type VARCHAR,
            refund_event_code VARCHAR
        );
        """,
    ),
    (
        6,
        "direct debit: mandates, their history, AUDDIS instructions, payment terms on accounts",
        """
        ALTER TABLE accounts ADD COLUMN payment_term VARCHAR;
        CREATE TABLE mandates (
            mandate_id VARCHAR PRIMARY KEY,
            account_number VARCHAR NOT NULL,
            service_user_number VARCHAR NOT NULL,
            reference VARCHAR NOT NULL,
            sort_code VARCHAR NOT NULL,
            bank_account VARCHAR NOT NULL,
            account_name VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            pending_instruction VARCHAR,
            previous_sort_code VARCHAR,
            previous_bank_account VARCHAR,
            previous_account_name VARCHAR,
            submitted_on DATE,
            activated_on DATE,
            cancelled_on DATE,
            created_at TIMESTAMPTZ NOT NULL,
            UNIQUE (service_user_number, reference)
        );
        CREATE TABLE mandate_history (
            mandate_id VARCHAR NOT NULL,
            old_status VARCHAR,
            new_status VARCHAR NOT NULL,
            cause VARCHAR NOT NULL,
            changed_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE auddis_instructions (
            batch_id VARCHAR NOT NULL,
            position BIGINT NOT NULL,
            mandate_id VARCHAR NOT NULL,
            transaction_code VARCHAR NOT NULL,
            sort_code VARCHAR NOT NULL,
            bank_account VARCHAR NOT NULL,
            account_name VARCHAR NOT NULL,
            reference VARCHAR NOT NULL,
            PRIMARY KEY (batch_id, position)
        );
        """,
    ),
    (
        7,
        "direct debit: ADDACS advices, collections and their invoices, ARUDD returns, Payments module tables",
        """
        ALTER TABLE mandates ADD COLUMN final_collection_requested BOOLEAN DEFAULT FALSE;
        -- A day's instructions are written once, inside the transaction that creates their batch row (whose key
        -- guards it), so a per-row index bought nothing and cost a third of a 1,000,000-mandate AUDDIS run.
        CREATE TABLE auddis_instructions_unindexed AS SELECT * FROM auddis_instructions;
        DROP TABLE auddis_instructions;
        ALTER TABLE auddis_instructions_unindexed RENAME TO auddis_instructions;
        CREATE TABLE config_mandate_revision_codes (
            code VARCHAR PRIMARY KEY,
            name VARCHAR NOT NULL,
            action VARCHAR NOT NULL,
            reason_type VARCHAR NOT NULL,
            reason_code VARCHAR NOT NULL,
            event_type VARCHAR NOT NULL,
            event_code VARCHAR NOT NULL
        );
        CREATE TABLE config_bacs_return_codes (
            return_code VARCHAR PRIMARY KEY,
            rejection_code VARCHAR NOT NULL
        );
        CREATE TABLE addacs_advices (
            batch_id VARCHAR NOT NULL,
            position BIGINT NOT NULL,
            reference VARCHAR,
            payer_name VARCHAR,
            payer_sort_code VARCHAR,
            payer_account_number VARCHAR,
            reason_code VARCHAR,
            new_sort_code VARCHAR,
            new_account_number VARCHAR,
            effective_date DATE,
            mandate_id VARCHAR,
            account_number VARCHAR,
            action VARCHAR,
            outcome VARCHAR NOT NULL,
            problem_code VARCHAR,
            problem VARCHAR,
            PRIMARY KEY (batch_id, position)
        );
        -- Like the AUDDIS instructions, a day's debits and their items are written once under their batch row's
        -- key; the ledger's UNIQUE idempotency key is what makes posting them exactly-once.
        CREATE TABLE dd_collections (
            collection_id VARCHAR NOT NULL,
            batch_id VARCHAR NOT NULL,
            business_date DATE NOT NULL,
            mandate_id VARCHAR NOT NULL,
            account_number VARCHAR NOT NULL,
            reference VARCHAR NOT NULL,
            sort_code VARCHAR NOT NULL,
            bank_account VARCHAR NOT NULL,
            account_name VARCHAR NOT NULL,
            transaction_code VARCHAR NOT NULL,
            amount_minor BIGINT NOT NULL,
            currency VARCHAR NOT NULL,
            attempt INTEGER NOT NULL,
            first_collection_id VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            reason_code VARCHAR,
            rejection_batch_id VARCHAR,
            retry_due_on DATE
        );
        CREATE TABLE dd_collection_items (
            collection_id VARCHAR NOT NULL,
            invoice_number VARCHAR NOT NULL,
            amount_minor BIGINT NOT NULL
        );
        CREATE TABLE dd_returns (
            batch_id VARCHAR NOT NULL,
            position BIGINT NOT NULL,
            reference VARCHAR,
            transaction_code VARCHAR,
            return_code VARCHAR,
            return_description VARCHAR,
            original_processing_date DATE,
            amount_minor BIGINT,
            currency VARCHAR,
            payer_sort_code VARCHAR,
            payer_account VARCHAR,
            collection_id VARCHAR,
            account_number VARCHAR,
            reason_code VARCHAR,
            outcome VARCHAR NOT NULL,
            decline VARCHAR,
            attempt INTEGER,
            retry_due_on DATE,
            problem_code VARCHAR,
            problem VARCHAR,
            PRIMARY KEY (batch_id, position)
        );
        """,
    ),
    (
        8,
        "hardware orders: catalogue, orders and lines with their history, fraud checks, sales order requests, "
        "warehouse dispatches, devices and enrolment, pending charges",
        """
        CREATE TABLE hw_products (
            sku VARCHAR PRIMARY KEY,
            product_type VARCHAR NOT NULL,
            description VARCHAR NOT NULL,
            price_minor BIGINT NOT NULL,
            currency VARCHAR NOT NULL,
            warehouse VARCHAR NOT NULL,
            manufacturer VARCHAR
        );
        CREATE TABLE hw_settings (
            stuck_order_days INTEGER NOT NULL
        );
        CREATE TABLE hw_deny_list (
            kind VARCHAR NOT NULL,
            value VARCHAR NOT NULL,
            PRIMARY KEY (kind, value)
        );
        CREATE SEQUENCE hw_order_seq;
        CREATE SEQUENCE hw_generation_seq;
        CREATE TABLE hw_orders (
            order_id VARCHAR PRIMARY KEY,
            account_number VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            billing VARCHAR NOT NULL,
            fraud_check BOOLEAN NOT NULL,
            enrolment BOOLEAN NOT NULL,
            currency VARCHAR NOT NULL,
            delivery_name VARCHAR,
            address_line1 VARCHAR,
            address_line2 VARCHAR,
            town VARCHAR,
            postcode VARCHAR,
            generation_seq BIGINT,
            request_batch_id VARCHAR,
            error_reason VARCHAR,
            created_at TIMESTAMPTZ NOT NULL,
            generated_at TIMESTAMPTZ,
            sent_at TIMESTAMPTZ,
            completed_at TIMESTAMPTZ,
            updated_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE hw_order_lines (
            order_id VARCHAR NOT NULL,
            line_number INTEGER NOT NULL,
            sku VARCHAR NOT NULL,
            product_type VARCHAR NOT NULL,
            warehouse VARCHAR NOT NULL,
            quantity INTEGER NOT NULL,
            unit_price_minor BIGINT NOT NULL,
            dispatched_quantity INTEGER NOT NULL DEFAULT 0,
            error_reason VARCHAR,
            PRIMARY KEY (order_id, line_number)
        );
        CREATE TABLE hw_order_history (
            order_id VARCHAR NOT NULL,
            old_status VARCHAR,
            new_status VARCHAR NOT NULL,
            cause VARCHAR NOT NULL,
            changed_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE hw_fraud_checks (
            batch_id VARCHAR NOT NULL,
            order_id VARCHAR NOT NULL,
            passed BOOLEAN NOT NULL,
            reason VARCHAR,
            checked_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (batch_id, order_id)
        );
        CREATE TABLE hw_request_orders (
            batch_id VARCHAR NOT NULL,
            order_id VARCHAR NOT NULL,
            PRIMARY KEY (batch_id, order_id)
        );
        CREATE TABLE hw_dispatch_records (
            batch_id VARCHAR NOT NULL,
            position BIGINT NOT NULL,
            order_id VARCHAR,
            line_number VARCHAR,
            sku VARCHAR,
            status VARCHAR,
            imei VARCHAR,
            serial_number VARCHAR,
            courier_reference VARCHAR,
            dispatched_at VARCHAR,
            error_reason VARCHAR,
            outcome VARCHAR NOT NULL,
            problem_code VARCHAR,
            problem VARCHAR,
            PRIMARY KEY (batch_id, position)
        );
        CREATE TABLE hw_devices (
            device_id VARCHAR PRIMARY KEY,
            imei VARCHAR,
            serial_number VARCHAR,
            sku VARCHAR NOT NULL,
            manufacturer VARCHAR,
            order_id VARCHAR NOT NULL,
            line_number INTEGER NOT NULL,
            account_number VARCHAR NOT NULL,
            courier_reference VARCHAR,
            dispatch_batch_id VARCHAR NOT NULL,
            dispatched_at TIMESTAMPTZ NOT NULL,
            enrolment_status VARCHAR NOT NULL,
            enrolment_reason VARCHAR,
            enrolment_updated_at TIMESTAMPTZ
        );
        CREATE TABLE hw_enrolment_requests (
            request_id VARCHAR PRIMARY KEY,
            batch_id VARCHAR NOT NULL,
            manufacturer VARCHAR NOT NULL,
            device_id VARCHAR NOT NULL,
            action VARCHAR NOT NULL,
            requested_at TIMESTAMPTZ NOT NULL,
            outcome VARCHAR,
            reason VARCHAR,
            answered_batch_id VARCHAR
        );
        CREATE TABLE hw_enrolment_responses (
            batch_id VARCHAR NOT NULL,
            position BIGINT NOT NULL,
            record_id VARCHAR,
            request_id VARCHAR,
            device_id VARCHAR,
            action VARCHAR,
            result VARCHAR,
            reason VARCHAR,
            outcome VARCHAR NOT NULL,
            problem_code VARCHAR,
            problem VARCHAR,
            PRIMARY KEY (batch_id, position)
        );
        CREATE TABLE hw_pending_charges (
            order_id VARCHAR PRIMARY KEY,
            account_number VARCHAR NOT NULL,
            amount_minor BIGINT NOT NULL,
            currency VARCHAR NOT NULL,
            description VARCHAR NOT NULL,
            dispatch_batch_id VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            invoice_number VARCHAR,
            invoiced_at TIMESTAMPTZ
        );
        """,
    ),
    (
        9,
        "one-off payments: the final outcome of each API payment, as the Ledger Monitor posted or refused it",
        """
        CREATE TABLE one_off_payments (
            payment_id VARCHAR PRIMARY KEY,
            account_number VARCHAR NOT NULL,
            amount_minor BIGINT NOT NULL,
            currency VARCHAR NOT NULL,
            channel VARCHAR NOT NULL,
            client_id VARCHAR NOT NULL,
            method VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            reason_code VARCHAR,
            provider VARCHAR NOT NULL,
            provider_reference VARCHAR,
            created_at TIMESTAMPTZ NOT NULL,
            completed_at TIMESTAMPTZ,
            batch_id VARCHAR NOT NULL,
            recorded_at TIMESTAMPTZ NOT NULL
        );
        """,
    ),
    (
        10,
        "nrp_records without the (batch_id, position) primary key: a batch is written once, in one transaction "
        "that checks it is new, and the index cost 0.3 s of every million records",
        """
        CREATE TABLE nrp_records_v10 (
            batch_id VARCHAR NOT NULL,
            position BIGINT NOT NULL,
            record_id VARCHAR,
            account_number VARCHAR,
            invoice_number VARCHAR,
            amount_minor BIGINT,
            currency VARCHAR,
            payment_date TIMESTAMPTZ,
            payment_method VARCHAR,
            reference VARCHAR,
            outcome VARCHAR NOT NULL,
            allocation VARCHAR,
            ledger_account VARCHAR,
            reason_code VARCHAR,
            reason VARCHAR
        );
        INSERT INTO nrp_records_v10 SELECT * FROM nrp_records ORDER BY batch_id, position;
        DROP TABLE nrp_records;
        ALTER TABLE nrp_records_v10 RENAME TO nrp_records;
        """,
    ),
    (
        11,
        "Bacs (issue 14): the register of submission serials per service user number (VOL1 serial unique on a "
        "day, HDR1 set id and UHL1 file number agreeing with it); the day Bacs processes each debit, which ARUDD "
        "reports as originalProcessingDate; mandates held until an operator decides",
        """
        CREATE TABLE bacs_submissions (
            service_user_number VARCHAR NOT NULL,
            serial VARCHAR NOT NULL,
            input_day DATE NOT NULL,
            file_number INTEGER NOT NULL,
            batch_id VARCHAR NOT NULL,
            processing_day DATE NOT NULL,
            allocated_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (service_user_number, serial),
            UNIQUE (service_user_number, input_day, file_number),
            UNIQUE (batch_id)
        );
        ALTER TABLE dd_collections ADD COLUMN processing_date DATE;
        ALTER TABLE mandates ADD COLUMN held_reason VARCHAR;
        ALTER TABLE config_bacs_return_codes ADD COLUMN mandate_action VARCHAR;
        ALTER TABLE dd_returns ADD COLUMN mandate_action VARCHAR;
        """,
    ),
]


def apply_migrations(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Apply what is missing, each migration in its own transaction; returns the versions applied now."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    done = {row[0] for row in con.execute("SELECT version FROM schema_migrations").fetchall()}
    applied = []
    for version, name, sql in MIGRATIONS:
        if version in done:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(sql)
            con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied
