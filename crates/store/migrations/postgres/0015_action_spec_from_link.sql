-- As SQLite's 0022: an update queued with its link's spec is stored without it (`action_json`
-- before the spec, `spec_tail` after it; readers put the link's `spec_json` in between), and a
-- link whose spec changes first writes the old spec into its conference's rows that still
-- take it from the link.
ALTER TABLE outbox_actions ADD COLUMN spec_tail TEXT;
CREATE FUNCTION links_spec_kept_for_actions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE outbox_actions SET action_json = action_json || OLD.spec_json || spec_tail, spec_tail = NULL
    WHERE spec_tail IS NOT NULL
      AND id IN (SELECT id FROM outbox WHERE conference_id = OLD.conference_id);
    RETURN NULL;
END
$$;
CREATE TRIGGER links_spec_kept_for_actions AFTER UPDATE OF spec_json ON links
    FOR EACH ROW WHEN (OLD.spec_json IS DISTINCT FROM NEW.spec_json)
    EXECUTE FUNCTION links_spec_kept_for_actions();
