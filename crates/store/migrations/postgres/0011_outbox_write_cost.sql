-- What a queued action costs to write (issue 11). Every index on a random key (a conference id,
-- an idempotency key) costs a page written at a random place per row, at the sync that queues
-- the action and again at the drain that reports it. Two of them go:
-- - outbox_planned: no statement looks outbox rows up by planned key (planned_keys counts each
--   key's uses since 0008);
-- - outbox_pending: a conference's pending rows are found through outbox_conference
--   (conference_id, id) and the row's state. A conference has a few rows (finished ones are
--   pruned by age), so nothing scans more than before, and reporting a row (its state leaving
--   'pending') no longer rewrites an index page at a random place.
DROP INDEX outbox_planned;
DROP INDEX outbox_pending;
