-- customer contact details, the workflow dispatch register, the e-mail outbox, operator tasks
ALTER TABLE accounts ADD COLUMN email VARCHAR;
ALTER TABLE accounts ADD COLUMN phone VARCHAR;
-- one row per workflow event: the action it was given and whether that action is done (exactly once)
CREATE TABLE workflow_dispatch (
    event_id BIGINT PRIMARY KEY,
    action VARCHAR NOT NULL,
    target VARCHAR,
    status VARCHAR NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_error VARCHAR,
    result VARCHAR,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
-- every e-mail we send (alerts and customer communications); the message id makes a second copy impossible
CREATE TABLE email_outbox (
    message_id VARCHAR PRIMARY KEY,
    kind VARCHAR NOT NULL,
    source_ref VARCHAR,
    account_number VARCHAR,
    recipients VARCHAR[] NOT NULL,
    subject VARCHAR NOT NULL,
    body_text VARCHAR NOT NULL,
    body_html VARCHAR,
    status VARCHAR NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_error VARCHAR,
    delivered_to VARCHAR,
    created_at TIMESTAMPTZ NOT NULL,
    sent_at TIMESTAMPTZ
);
CREATE TABLE operator_tasks (
    event_id BIGINT PRIMARY KEY,
    queue VARCHAR NOT NULL,
    account_number VARCHAR,
    summary VARCHAR NOT NULL,
    status VARCHAR NOT NULL DEFAULT 'OPEN',
    created_at TIMESTAMPTZ NOT NULL
);
