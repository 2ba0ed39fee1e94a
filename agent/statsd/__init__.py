"""StatsD: a UDP listener in the agent, so jobs in any language can report the data they process."""
