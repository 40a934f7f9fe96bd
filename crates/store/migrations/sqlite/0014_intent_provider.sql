-- The provider that makes a create intent's meeting (recorded by the first attempt, NULL before
-- providers were named): every retry of the create, and its clean-up, reach that provider, whose
-- idempotency key finds the meeting an earlier attempt made, even after the deployment moved to
-- another provider (`confsync admin migrate-provider`).
ALTER TABLE create_intents ADD COLUMN provider TEXT;
