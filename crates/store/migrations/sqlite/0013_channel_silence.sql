-- What the webhook heard on each push channel, kept in the store so that any worker behind the
-- load balancer can tell a quiet channel from a dead one (each worker hears only its share):
-- when the last accepted message came, the moving average of the gaps between messages (ms),
-- and the `last_message_at` whose silence was already answered with a poll (-1: the missing
-- `sync` handshake was).
ALTER TABLE channels ADD COLUMN last_message_at BIGINT;
ALTER TABLE channels ADD COLUMN gap_ms BIGINT;
ALTER TABLE channels ADD COLUMN quiet_polled_at BIGINT NOT NULL DEFAULT 0;

-- The workers sharing the store (Postgres): each registers under its name with the key of the
-- session advisory lock it holds while it lives (Store::register_worker); a row whose lock is
-- not held is a dead worker's, removed by the next registration. Rate budgets are split among
-- the live ones, and status lists them.
CREATE TABLE workers (
    name       TEXT   NOT NULL PRIMARY KEY,
    lock_key   BIGINT NOT NULL,
    started_at BIGINT NOT NULL
);
