"""Development kit shared by `profilesync demo`, the tests and the benchmark: embedded servers, child
processes, simulated signups. Nothing here runs in a deployment."""
