"""LISTEN for signups, drain the outbox in batches, enqueue RQ jobs."""
