-- hardware orders: catalogue, orders and lines with their history, fraud checks, sales order requests, warehouse dispatches, devices and enrolment, pending charges
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
