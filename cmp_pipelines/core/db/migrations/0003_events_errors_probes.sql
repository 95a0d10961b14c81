-- workflow events, job errors and probe results
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
