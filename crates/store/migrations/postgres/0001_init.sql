-- confsync store, Postgres dialect: the schema the SQLite migrations 0001-0006 build, in one
-- step (Postgres stores start here). Same tables, columns, constraints and partial indexes;
-- only the types differ where Postgres is strict: every integer is BIGINT (the store binds and
-- reads i64), ids are identity columns. Conventions as in migrations/sqlite/0001_init.sql.

CREATE TABLE calendars (
    calendar_id     TEXT    NOT NULL PRIMARY KEY,
    sync_token      TEXT,
    needs_full_sync BOOLEAN NOT NULL DEFAULT FALSE,
    last_sync_at    BIGINT,
    last_error      TEXT,
    created_at      BIGINT  NOT NULL,
    owner           TEXT,
    dirty_at        BIGINT,
    dirty_gen       BIGINT  NOT NULL DEFAULT 0,
    sync_failures   BIGINT  NOT NULL DEFAULT 0,
    retry_at        BIGINT
);
CREATE INDEX calendars_dirty ON calendars (dirty_at) WHERE dirty_at IS NOT NULL;

CREATE TABLE links (
    conference_id       TEXT    NOT NULL PRIMARY KEY,
    provider            TEXT    NOT NULL,
    calendar_id         TEXT    NOT NULL REFERENCES calendars (calendar_id),
    event_id            TEXT    NOT NULL,
    spec_json           TEXT    NOT NULL,
    fingerprint         TEXT    NOT NULL,
    applied_fingerprint TEXT,
    last_etag_seen      TEXT,
    last_etag_written   TEXT,
    occurrences_json    TEXT    NOT NULL DEFAULT '{}',
    join_url            TEXT,
    deleted             BOOLEAN NOT NULL DEFAULT FALSE,
    created_at          BIGINT  NOT NULL,
    updated_at          BIGINT  NOT NULL,
    version             BIGINT  NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX links_live_event ON links (calendar_id, event_id) WHERE NOT deleted;
CREATE INDEX links_event ON links (calendar_id, event_id);

CREATE TABLE outbox (
    id              BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conference_id   TEXT    NOT NULL REFERENCES links (conference_id),
    calendar_id     TEXT    NOT NULL,
    event_id        TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    action_json     TEXT    NOT NULL,
    planned_key     TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL UNIQUE,
    state           TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'done', 'failed', 'superseded')),
    attempts        BIGINT  NOT NULL DEFAULT 0,
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

CREATE TABLE dead_letters (
    calendar_id TEXT   NOT NULL,
    event_id    TEXT   NOT NULL DEFAULT '',
    reason      TEXT   NOT NULL,
    raw_json    TEXT   NOT NULL,
    first_seen  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    count       BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (calendar_id, event_id, reason)
);

CREATE TABLE meetings (
    meeting_id       TEXT    NOT NULL PRIMARY KEY,
    idempotency_key  TEXT    NOT NULL UNIQUE,
    spec_json        TEXT    NOT NULL,
    join_url         TEXT    NOT NULL,
    occurrences_json TEXT    NOT NULL DEFAULT '{}',
    deleted          BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL
);

CREATE TABLE api_keys (
    name        TEXT    PRIMARY KEY,
    key_hash    TEXT    NOT NULL UNIQUE,
    created_at  BIGINT  NOT NULL,
    revoked     BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE channels (
    channel_id      TEXT    PRIMARY KEY,
    calendar_id     TEXT    NOT NULL REFERENCES calendars (calendar_id),
    resource_id     TEXT    NOT NULL,
    token_hash      TEXT    NOT NULL,
    expiration_ms   BIGINT  NOT NULL,
    created_at      BIGINT  NOT NULL,
    stopped         BOOLEAN NOT NULL DEFAULT FALSE,
    highest_message BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX channels_calendar ON channels (calendar_id);

CREATE TABLE google_users (
    user_id              TEXT    NOT NULL PRIMARY KEY,
    refresh_token_sealed TEXT    NOT NULL,
    scope                TEXT,
    needs_reauth         BOOLEAN NOT NULL DEFAULT FALSE,
    reauth_reason        TEXT,
    created_at           BIGINT  NOT NULL,
    updated_at           BIGINT  NOT NULL
);

CREATE TABLE oauth_requests (
    state_hash       TEXT    NOT NULL PRIMARY KEY,
    verifier_sealed  TEXT    NOT NULL,
    calendar_id      TEXT,
    created_at       BIGINT  NOT NULL
);

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

CREATE TABLE write_probe (
    id        BIGINT  PRIMARY KEY,
    probed_at BIGINT  NOT NULL
);
