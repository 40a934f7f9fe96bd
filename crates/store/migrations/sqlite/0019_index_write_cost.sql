-- What a queued action costs to write, continued (issue 11; see 0016). Each b-tree keyed at
-- random (a conference id, an event id, a hashed key) costs a page written at a random place
-- per row. Two of them go:
-- - planned_keys was a rowid table with its key in a separate unique index: two b-trees, one
--   of them random. WITHOUT ROWID keeps the rows (a short key and a count) in the key's own
--   b-tree.
-- - links_event (calendar_id, event_id) and links_live_event (the same, unique among live
--   links) were two random b-trees for one key. One index now does both: its third column is
--   NULL for a deleted link, and NULLs never collide in a unique index, so uniqueness still
--   holds among live links only, and lookups by (calendar_id, event_id) use its first two
--   columns.
CREATE TABLE planned_keys_by_key (
    planned_key TEXT   NOT NULL PRIMARY KEY,
    uses        BIGINT NOT NULL
) WITHOUT ROWID;
INSERT INTO planned_keys_by_key (planned_key, uses) SELECT planned_key, uses FROM planned_keys;
DROP TABLE planned_keys;
ALTER TABLE planned_keys_by_key RENAME TO planned_keys;
DROP INDEX links_live_event;
DROP INDEX links_event;
CREATE UNIQUE INDEX links_event ON links (calendar_id, event_id, (CASE WHEN deleted THEN NULL ELSE 0 END));
