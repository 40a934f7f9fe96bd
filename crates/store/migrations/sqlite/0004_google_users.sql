-- Users who connected their Google account through /oauth/google/start (per-user OAuth).
-- The refresh token is kept sealed (AES-256-GCM, bound to the user id); the key is in config,
-- never in the database. A revoked grant sets needs_reauth: the user's calendars wait for the
-- user to connect again instead of retrying.
CREATE TABLE google_users (
    user_id              TEXT    NOT NULL PRIMARY KEY, -- the account's email, lowercase
    refresh_token_sealed TEXT    NOT NULL,
    scope                TEXT,
    needs_reauth         BOOLEAN NOT NULL DEFAULT FALSE,
    reauth_reason        TEXT,
    created_at           BIGINT  NOT NULL,
    updated_at           BIGINT  NOT NULL
);

-- Which user's grant reaches a calendar; NULL: the calendar's id is its owner's email.
ALTER TABLE calendars ADD COLUMN owner TEXT;

-- Authorization requests in flight: the PKCE verifier (sealed) waits here for the callback,
-- looked up by the hash of `state`; single use, and stale after ten minutes.
CREATE TABLE oauth_requests (
    state_hash       TEXT    NOT NULL PRIMARY KEY,
    verifier_sealed  TEXT    NOT NULL,
    calendar_id      TEXT,
    created_at       BIGINT  NOT NULL
);
