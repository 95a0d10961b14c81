-- The ledger's two lookup indexes, made cheap to keep while a batch copies a million postings in (issue 19).
-- Measured on 1M postings copied into a ledger of 1M (benchmarks/README, "ledger index upkeep"): the B-tree on
-- account_number took ~3 s of a 7 s COPY, because every posting lands on a random leaf of it.
-- * account_number: only ever looked up by equality (an account's balance, statement and postings), so a hash
--   index serves every lookup and costs ~1 s less per million.
-- * batch_id: a batch's postings are written together by one transaction, so they sit in neighbouring pages; a
--   BRIN index (each range's lowest and highest batch id) finds them for almost no upkeep. It is lossy: a lookup
--   reads the ranges that may hold the batch and rechecks the rows, so answers are exact.
DROP INDEX IF EXISTS ledger_postings_account;
CREATE INDEX ledger_postings_account ON ledger_postings USING hash (account_number);
DROP INDEX IF EXISTS ledger_postings_batch;
CREATE INDEX ledger_postings_batch ON ledger_postings USING brin (batch_id) WITH (autosummarize = on);
