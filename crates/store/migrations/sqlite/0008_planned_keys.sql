-- How many outbox rows each planned key has had: the `#N` suffix of a recurring intent's
-- idempotency key counts them here, so finished outbox rows can be pruned without a later row
-- reusing an earlier row's key.
CREATE TABLE planned_keys (
    planned_key TEXT   NOT NULL PRIMARY KEY,
    uses        BIGINT NOT NULL
);
INSERT INTO planned_keys (planned_key, uses)
    SELECT planned_key, COUNT(*) FROM outbox GROUP BY planned_key;
-- Finished rows are pruned by age.
CREATE INDEX outbox_finished ON outbox (updated_at) WHERE state <> 'pending';
