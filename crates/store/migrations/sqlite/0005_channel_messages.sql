-- The highest X-Goog-Message-Number accepted on each push channel. Google numbers a channel's
-- messages in increasing order; a notification whose number is not above this one is a replay
-- (or a redelivery) and is not acted on again. Kept in the store, and raised only by a
-- conditional UPDATE, so concurrent deliveries of one message let one through and a restart
-- still recognises replays.
ALTER TABLE channels ADD COLUMN highest_message BIGINT NOT NULL DEFAULT 0;
