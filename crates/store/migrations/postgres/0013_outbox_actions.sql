-- What a queued action costs to write (issue 11; SQLite's 0020): the claim and the report of an
-- outbox row change only its state and lease columns, and every UPDATE writes a new version of
-- the whole row, an update's action (its meeting spec) included. The action now lives in its
-- own table, written once when the row is queued; it goes with its row (ON DELETE CASCADE).
CREATE TABLE outbox_actions (
    id          BIGINT PRIMARY KEY REFERENCES outbox (id) ON DELETE CASCADE,
    action_json TEXT   NOT NULL
);
INSERT INTO outbox_actions (id, action_json) SELECT id, action_json FROM outbox;
ALTER TABLE outbox DROP COLUMN action_json;
