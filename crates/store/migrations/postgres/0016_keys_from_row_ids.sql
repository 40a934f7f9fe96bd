-- A row's idempotency key is its planned key suffixed with its own row id (see SQLite's
-- migration 0023): row ids are never reused (an identity column), so no key is given twice,
-- with nothing counted in `planned_keys` and no unique index on the key (each a b-tree keyed
-- by a hash: a page written at a random place per queued action). `idempotency_key` keeps the
-- keys given before this migration and is NULL for rows queued since; readers take
-- `COALESCE(idempotency_key, planned_key || '#' || id)`.
ALTER TABLE outbox ALTER COLUMN idempotency_key DROP NOT NULL;
ALTER TABLE outbox DROP CONSTRAINT outbox_idempotency_key_key;
DROP TABLE planned_keys;
