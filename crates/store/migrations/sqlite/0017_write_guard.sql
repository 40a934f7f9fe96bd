-- A check that fails the transaction: `INSERT INTO write_guard (landed) VALUES (changes())`
-- right after a conditional write aborts with the message below when the write changed no row.
-- A link write based on what was read (its version, or no link yet) can then be sent with the
-- transaction's next statement instead of alone (one round trip to the writer fewer, the
-- writer held that much less): the store turns this message into `StoreError::Stale`
-- (`error.rs`). A view with an INSTEAD OF trigger writes nothing when the check holds.
CREATE VIEW write_guard AS SELECT 1 AS landed;
CREATE TRIGGER write_guard_check INSTEAD OF INSERT ON write_guard WHEN NEW.landed = 0
BEGIN
    SELECT RAISE(ABORT, 'confsync: stale write');
END;
