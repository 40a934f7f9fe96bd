-- When a link's meeting ends (unix ms), NULL for series and links written before this column:
-- a full sync verifies only links whose meeting ends inside or after its listing window.
ALTER TABLE links ADD COLUMN ends_at BIGINT;
CREATE INDEX links_calendar_ends ON links (calendar_id, ends_at) WHERE NOT deleted;
