-- Profile lifecycle: changes of a user after the signup go through the same outbox (the update trigger on
-- auth.users and profile_sync.sync_profiles are definitions, sql/definitions/).
--
-- The transaction that recorded an event (its top-level id, also when the row was written inside a
-- subtransaction such as the triggers' exception blocks). The update trigger uses it to record at most one
-- event per user and transaction. Two statements: a column added without a default needs no table rewrite;
-- old rows stay NULL (committed by earlier transactions, so never "this transaction").
ALTER TABLE profile_sync.signup_events ADD COLUMN xact_id xid8;
ALTER TABLE profile_sync.signup_events ALTER COLUMN xact_id SET DEFAULT pg_catalog.pg_current_xact_id();
