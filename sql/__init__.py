"""The SQL migrations (NNNN_name.sql) and the dev auth stub, installed as the package `profilesync.sql`."""
