-- confsync store, schema version 1, SQLite dialect.
--
-- Conventions (the same for every database the store will support):
-- - timestamps are unix milliseconds in BIGINT columns (the caller passes "now"; the store has
--   no clock of its own in its statements);
-- - booleans are BOOLEAN (SQLite keeps 0/1) and statements use TRUE/FALSE/NOT, never 0/1;
-- - JSON is kept as TEXT written by serde_json (no database JSON functions are used).
-- Only this DDL is per database: a Postgres schema will live beside it in migrations/postgres/.
-- SQLite-only syntax here: `INTEGER PRIMARY KEY AUTOINCREMENT` (Postgres: BIGINT GENERATED ALWAYS
-- AS IDENTITY).

-- One row per synced calendar: where its incremental sync stands.
CREATE TABLE calendars (
    calendar_id     TEXT    NOT NULL PRIMARY KEY,
    sync_token      TEXT,
    needs_full_sync BOOLEAN NOT NULL DEFAULT FALSE,
    last_sync_at    BIGINT,
    last_error      TEXT,
    created_at      BIGINT  NOT NULL
);

-- What the engine remembers of each conference it manages (confsync_core::plan::Link).
CREATE TABLE links (
    conference_id       TEXT    NOT NULL PRIMARY KEY,
    provider            TEXT    NOT NULL,
    calendar_id         TEXT    NOT NULL REFERENCES calendars (calendar_id),
    event_id            TEXT    NOT NULL,
    spec_json           TEXT    NOT NULL,
    -- MeetingSpec::fingerprint() of spec_json: the spec the meeting has once the outbox ran.
    fingerprint         TEXT    NOT NULL,
    -- The fingerprint of the last Update that actually landed at the provider (executor-owned).
    applied_fingerprint TEXT,
    last_etag_seen      TEXT,
    -- The etag of our own last write-back (executor-owned): seeing it again is an echo.
    last_etag_written   TEXT,
    occurrences_json    TEXT    NOT NULL DEFAULT '{}',
    -- The join link the event shows (video entry point), as last seen or written back.
    join_url            TEXT,
    deleted             BOOLEAN NOT NULL DEFAULT FALSE,
    created_at          BIGINT  NOT NULL,
    updated_at          BIGINT  NOT NULL
);
-- One live link per event. Deleted links are kept (their delete may still be pending, and a
-- tombstone must find them), so an event whose conference was replaced can hold a deleted link
-- and a live one: uniqueness is only among live links.
CREATE UNIQUE INDEX links_live_event ON links (calendar_id, event_id) WHERE NOT deleted;
CREATE INDEX links_event ON links (calendar_id, event_id);

-- Provider calls to make, in id order per conference.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT, -- SQLite-only syntax, see above
    conference_id   TEXT    NOT NULL REFERENCES links (conference_id),
    calendar_id     TEXT    NOT NULL,
    event_id        TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    action_json     TEXT    NOT NULL,
    -- confsync_core::plan::idempotency_key of the action: the intended change.
    planned_key     TEXT    NOT NULL,
    -- What the provider is sent: planned_key, or planned_key#N when the same intent recurs after
    -- a different one (A -> B -> A must run the third change, not be swallowed as a replay).
    idempotency_key TEXT    NOT NULL UNIQUE,
    state           TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'done', 'failed', 'superseded')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    not_before      BIGINT  NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL
);
CREATE INDEX outbox_conference ON outbox (conference_id, id);
CREATE INDEX outbox_pending ON outbox (conference_id, id) WHERE state = 'pending';
CREATE INDEX outbox_due ON outbox (not_before, id) WHERE state = 'pending';
CREATE INDEX outbox_planned ON outbox (planned_key);
CREATE INDEX outbox_failed ON outbox (updated_at) WHERE state = 'failed';

-- Events that could not be understood, one row per (calendar, event, reason), counted.
CREATE TABLE dead_letters (
    calendar_id TEXT   NOT NULL,
    -- '' when the item had no usable id: NULLs would never collide in the key, so repeats of an
    -- id-less item would pile up instead of being counted.
    event_id    TEXT   NOT NULL DEFAULT '',
    reason      TEXT   NOT NULL,
    raw_json    TEXT   NOT NULL,
    first_seen  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    count       BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (calendar_id, event_id, reason)
);

-- Meetings of the built-in local provider.
CREATE TABLE meetings (
    meeting_id       TEXT    NOT NULL PRIMARY KEY,
    -- The idempotency key of the create: the same key again returns this meeting.
    idempotency_key  TEXT    NOT NULL UNIQUE,
    spec_json        TEXT    NOT NULL,
    join_url         TEXT    NOT NULL,
    occurrences_json TEXT    NOT NULL DEFAULT '{}',
    deleted          BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL
);
