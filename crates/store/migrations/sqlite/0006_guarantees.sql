-- Production guarantees: conditional link writes, durable sync triggers, create intents, and
-- a row for write probes.

-- Every write of a link's planner fields bumps its version. A writer that read a link before
-- making network calls (the executor's verify and relink, a sync page planned from links read
-- earlier) writes only if the version is still the one it read, else it re-plans.
ALTER TABLE links ADD COLUMN version BIGINT NOT NULL DEFAULT 0;

-- Durable sync triggers. A trigger (push notification, the add-on's sync call) is recorded
-- before it is acknowledged: dirty_at is set (kept from the first unsynced trigger) and
-- dirty_gen bumped. A pass clears dirty_at only if dirty_gen is still the value read when it
-- started, so a trigger that arrived during the pass makes another one. A failed pass leaves
-- the calendar dirty and sets retry_at (backoff); startup syncs every dirty calendar.
ALTER TABLE calendars ADD COLUMN dirty_at BIGINT;
ALTER TABLE calendars ADD COLUMN dirty_gen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE calendars ADD COLUMN sync_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE calendars ADD COLUMN retry_at BIGINT;
CREATE INDEX calendars_dirty ON calendars (dirty_at) WHERE dirty_at IS NOT NULL;

-- Create intents: one per (calendar, event), stored before the provider's create, whose key
-- derives from it, so a retried create (another request id, a lost answer) finds the same
-- meeting. `generation` grows when an event needs a new meeting after its earlier one was
-- removed. An intent whose meeting never shows up in its event is cleaned up after a grace
-- period (the meeting is deleted).
CREATE TABLE create_intents (
    calendar_id   TEXT    NOT NULL,
    event_id      TEXT    NOT NULL,
    generation    BIGINT  NOT NULL DEFAULT 1,
    state         TEXT    NOT NULL DEFAULT 'creating'
                  CHECK (state IN ('creating', 'linked', 'abandoned')),
    conference_id TEXT,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL,
    PRIMARY KEY (calendar_id, event_id)
);
CREATE INDEX create_intents_open ON create_intents (created_at) WHERE state <> 'abandoned';

-- /readyz writes here to learn whether the store takes writes.
CREATE TABLE write_probe (
    id        INTEGER PRIMARY KEY,
    probed_at BIGINT  NOT NULL
);
