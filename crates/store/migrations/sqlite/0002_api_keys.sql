-- API keys of the add-on API: only a SHA-256 hash of each key is kept.
CREATE TABLE api_keys (
    name        TEXT    PRIMARY KEY,
    key_hash    TEXT    NOT NULL UNIQUE,
    created_at  BIGINT  NOT NULL,
    revoked     BOOLEAN NOT NULL DEFAULT FALSE
);
