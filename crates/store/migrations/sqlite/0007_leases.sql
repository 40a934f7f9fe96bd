-- Several workers sharing one store (Postgres; SQLite keeps the same columns so the code is
-- one). Work is taken under leases that expire unless their holder renews them:
--
-- An outbox row is claimed by a worker (`lease_owner`) until `lease_until` (unix ms); each
-- claim bumps `lease_fence`, and a report (done, retry, failure) is accepted only with the
-- fence of the claim it answers, so a stalled worker's late report after its lease passed to
-- another worker is refused.
ALTER TABLE outbox ADD COLUMN lease_owner TEXT;
ALTER TABLE outbox ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN lease_fence BIGINT NOT NULL DEFAULT 0;

-- One sync at a time per calendar across workers: the same lease, on the calendar.
ALTER TABLE calendars ADD COLUMN sync_owner TEXT;
ALTER TABLE calendars ADD COLUMN sync_until BIGINT NOT NULL DEFAULT 0;
ALTER TABLE calendars ADD COLUMN sync_fence BIGINT NOT NULL DEFAULT 0;

-- Singleton duties (channel renewal, the sweep, clean-ups, retention): one worker at a time,
-- handed over when its holder stops renewing.
CREATE TABLE duties (
    name   TEXT    NOT NULL PRIMARY KEY,
    holder TEXT    NOT NULL,
    until  BIGINT  NOT NULL,
    fence  BIGINT  NOT NULL DEFAULT 1
);
