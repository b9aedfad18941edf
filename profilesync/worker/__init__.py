"""RQ job functions. Their dotted paths are a contract with queued jobs: never rename them."""
