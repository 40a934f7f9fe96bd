-- Push channels (events.watch) per calendar. The channel token is a per-channel secret: only its
-- SHA-256 hash is kept, and webhooks are checked against it.
CREATE TABLE channels (
    channel_id     TEXT    PRIMARY KEY,
    calendar_id    TEXT    NOT NULL REFERENCES calendars (calendar_id),
    resource_id    TEXT    NOT NULL,
    token_hash     TEXT    NOT NULL,
    expiration_ms  BIGINT  NOT NULL,
    created_at     BIGINT  NOT NULL,
    stopped        BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX channels_calendar ON channels (calendar_id);
