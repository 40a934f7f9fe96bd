-- What a queued action costs to write, continued (issue 11; see 0016 and 0019). An outbox row
-- is written three times: queued, claimed, reported. The claim and the report change only its
-- state and lease columns, but a row is rewritten whole, and an update's action (its meeting
-- spec, most of the row's bytes) went with it each time. The action now lives in its own
-- table, written once when the row is queued and never rewritten; it goes with its row
-- (ON DELETE CASCADE: pruning, a calendar's removal).
CREATE TABLE outbox_actions (
    id          INTEGER PRIMARY KEY REFERENCES outbox (id) ON DELETE CASCADE,
    action_json TEXT    NOT NULL
);
INSERT INTO outbox_actions (id, action_json) SELECT id, action_json FROM outbox;
ALTER TABLE outbox DROP COLUMN action_json;
