-- Postgres: the advisory lock key a claim's holder keeps while it lives (a session lock on a
-- connection of its own). Its absence from pg_locks means the holder died: its claims go to
-- the others at once instead of at `lease_until`. 0: no such lock (SQLite, or an unregistered
-- worker), the claim lasts until it expires.
ALTER TABLE outbox ADD COLUMN lease_key BIGINT NOT NULL DEFAULT 0;
ALTER TABLE calendars ADD COLUMN sync_key BIGINT NOT NULL DEFAULT 0;
