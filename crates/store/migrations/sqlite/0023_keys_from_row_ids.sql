-- What a queued action costs to write, continued (issue 11; see 0016, 0019, 0020, 0022). A row's
-- idempotency key was its planned key suffixed `#N`, N counted per planned key in
-- `planned_keys` (so that a key is never given twice, even after pruning), and the key was
-- UNIQUE in the outbox. Both are b-trees keyed by a hash: each queued action wrote a page at a
-- random place in each, about 700 bytes of WAL per action in a first full sync, and one page
-- each (4 KiB apiece) per commit of a sync of one change.
--
-- A row's key is now its planned key suffixed with its own row id: `planned_key#id`. Row ids
-- are never reused (AUTOINCREMENT; its high-water mark is carried over below), so no key is
-- given twice, with nothing counted and nothing to check. `idempotency_key` keeps the keys
-- given before this migration (a pending row retries with the key it was first sent with) and
-- is NULL for rows queued since; readers take `COALESCE(idempotency_key, planned_key || '#' ||
-- id)`.
--
-- SQLite cannot drop a UNIQUE constraint or a NOT NULL in place: the outbox is rebuilt. Its
-- action table is rebuilt beside it, referencing the new table, so that dropping the old
-- outbox (with foreign keys on, an implicit DELETE) cascades to nothing that is kept.
DROP TRIGGER links_spec_kept_for_actions;
CREATE TABLE outbox_rebuilt (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    conference_id   TEXT    NOT NULL REFERENCES links (conference_id),
    calendar_id     TEXT    NOT NULL,
    event_id        TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    planned_key     TEXT    NOT NULL,
    -- Only keys given before migration 0023; NULL: the key is planned_key || '#' || id.
    idempotency_key TEXT,
    state           TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'done', 'failed', 'superseded')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    not_before      BIGINT  NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT  NOT NULL DEFAULT 0,
    lease_fence     BIGINT  NOT NULL DEFAULT 0,
    lease_key       BIGINT  NOT NULL DEFAULT 0,
    recreate_into   TEXT
);
INSERT INTO outbox_rebuilt (id, conference_id, calendar_id, event_id, kind, planned_key,
        idempotency_key, state, attempts, not_before, last_error, created_at, updated_at,
        lease_owner, lease_until, lease_fence, lease_key, recreate_into)
    SELECT id, conference_id, calendar_id, event_id, kind, planned_key,
        idempotency_key, state, attempts, not_before, last_error, created_at, updated_at,
        lease_owner, lease_until, lease_fence, lease_key, recreate_into
    FROM outbox ORDER BY id;
-- The ids handed out so far, including those of rows pruned or forgotten since: none is
-- handed out again.
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'outbox_rebuilt', 0
    WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'outbox_rebuilt');
UPDATE sqlite_sequence
    SET seq = MAX(seq, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0))
    WHERE name = 'outbox_rebuilt';
CREATE TABLE outbox_actions_rebuilt (
    id          INTEGER PRIMARY KEY REFERENCES outbox_rebuilt (id) ON DELETE CASCADE,
    action_json TEXT    NOT NULL,
    spec_tail   TEXT
);
INSERT INTO outbox_actions_rebuilt (id, action_json, spec_tail)
    SELECT id, action_json, spec_tail FROM outbox_actions ORDER BY id;
DROP TABLE outbox_actions;
DROP TABLE outbox;
-- Renaming rewrites the reference of outbox_actions_rebuilt (and the sequence's name).
ALTER TABLE outbox_rebuilt RENAME TO outbox;
ALTER TABLE outbox_actions_rebuilt RENAME TO outbox_actions;
CREATE INDEX outbox_conference ON outbox (conference_id, id);
CREATE INDEX outbox_due ON outbox (not_before, id) WHERE state = 'pending';
CREATE INDEX outbox_failed ON outbox (updated_at) WHERE state = 'failed';
CREATE INDEX outbox_finished ON outbox (updated_at) WHERE state <> 'pending';
CREATE INDEX outbox_recreate_into ON outbox (recreate_into) WHERE recreate_into IS NOT NULL;
CREATE TRIGGER links_spec_kept_for_actions AFTER UPDATE OF spec_json ON links
WHEN OLD.spec_json IS NOT NEW.spec_json
BEGIN
    UPDATE outbox_actions SET action_json = action_json || OLD.spec_json || spec_tail, spec_tail = NULL
    WHERE spec_tail IS NOT NULL
      AND id IN (SELECT id FROM outbox WHERE conference_id = OLD.conference_id);
END;
DROP TABLE planned_keys;
