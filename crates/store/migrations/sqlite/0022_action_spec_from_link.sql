-- What a queued action costs to write, continued (issue 11; see 0020). An update's action
-- carries the meeting spec, and so does its link (the spec the meeting has once the outbox
-- ran): queued together, the same few hundred bytes were written twice. An update queued with
-- its link's spec is now stored without it: `action_json` holds the JSON before the spec,
-- `spec_tail` the JSON after it, and readers put the link's `spec_json` in between. NULL
-- `spec_tail`: `action_json` is whole (every other action, and rows from before).
--
-- When a link's spec changes, the rows of its conference that still take their spec from it
-- get the old spec written in first (this trigger, in the same statement), so each keeps the
-- spec it was queued with.
ALTER TABLE outbox_actions ADD COLUMN spec_tail TEXT;
CREATE TRIGGER links_spec_kept_for_actions AFTER UPDATE OF spec_json ON links
WHEN OLD.spec_json IS NOT NEW.spec_json
BEGIN
    UPDATE outbox_actions SET action_json = action_json || OLD.spec_json || spec_tail, spec_tail = NULL
    WHERE spec_tail IS NOT NULL
      AND id IN (SELECT id FROM outbox WHERE conference_id = OLD.conference_id);
END;
