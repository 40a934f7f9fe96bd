-- Status at scale (/v1/status, the status page, /metrics with 100,000 calendars): the reads
-- that rank or filter calendars and channels use these instead of scanning. None is on a
-- column a sync writes (last_sync_at is left out: every pass would update that index).
CREATE INDEX calendars_failing ON calendars (sync_failures DESC, calendar_id) WHERE sync_failures > 0;
CREATE INDEX calendars_owner_user ON calendars (COALESCE(owner, lower(calendar_id)));
CREATE INDEX channels_live ON channels (expiration_ms, channel_id) WHERE NOT stopped;
CREATE INDEX channels_live_calendar ON channels (calendar_id, expiration_ms) WHERE NOT stopped;
