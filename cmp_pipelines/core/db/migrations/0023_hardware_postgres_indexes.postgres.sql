-- PostgreSQL indexes for what the hardware-order steps pull (issue 19: defs/hardware_orders/pg.py); none on DuckDB, whose zone maps serve these scans
CREATE INDEX hw_orders_request_batch ON hw_orders (request_batch_id);
CREATE INDEX hw_orders_awaiting ON hw_orders (generation_seq) WHERE status = 'AWAITING_GENERATION' AND request_batch_id IS NULL;
CREATE INDEX hw_order_history_order ON hw_order_history (order_id);
CREATE INDEX hw_devices_dispatch_batch ON hw_devices (dispatch_batch_id);
CREATE INDEX hw_devices_enrolment_pending ON hw_devices (device_id) WHERE enrolment_status IN ('ENROL_PENDING', 'UNENROL_PENDING');
CREATE INDEX hw_enrolment_requests_batch ON hw_enrolment_requests (batch_id);
CREATE INDEX hw_enrolment_requests_answered ON hw_enrolment_requests (answered_batch_id);
CREATE INDEX hw_pending_charges_dispatch_batch ON hw_pending_charges (dispatch_batch_id);
