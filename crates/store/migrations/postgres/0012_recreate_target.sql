-- The meeting a pending recreate is making (`Store::record_recreate_target`), recorded after the
-- provider's create and before the event is pointed at it. A sync that finds an event showing
-- that meeting's conference before the links are swapped (the event moved to another calendar
-- meanwhile) must plan it against the link being recreated, not adopt it as a stranger: the
-- adoption would stamp the deployment's current provider on a meeting another provider made.
ALTER TABLE outbox ADD COLUMN recreate_into TEXT;
CREATE INDEX outbox_recreate_into ON outbox (recreate_into) WHERE recreate_into IS NOT NULL;
