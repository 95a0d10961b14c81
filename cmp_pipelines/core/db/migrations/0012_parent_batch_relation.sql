-- the parent batch relation of every posting and reversal batch (issue 15, one ledger): core/ledger.py finds a batch's posting or reversal batch by batches.parent_batch_id instead of rewriting its id, so a store written before every flow recorded the relation gets it from the id stem the two share
UPDATE batches c SET parent_batch_id = p.batch_id
FROM batches p
WHERE c.parent_batch_id IS NULL
  AND substr(c.batch_id, strpos(c.batch_id, '-') + 1) = substr(p.batch_id, strpos(p.batch_id, '-') + 1)
  AND ((c.kind = 'NRP_POSTING' AND p.kind = 'NRP_LOAD')
       OR (c.kind = 'CARD_POSTING' AND p.kind = 'CARD_EXTRACT')
       OR (c.kind = 'CARD_REVERSAL' AND p.kind = 'CARD_REJECTIONS')
       OR (c.kind = 'DD_POSTING' AND p.kind = 'DD_COLLECTION')
       OR (c.kind = 'DD_REVERSAL' AND p.kind = 'DD_RETURNS')
       OR (c.kind = 'HARDWARE_CHARGE' AND p.kind = 'WAREHOUSE_DISPATCH'));
