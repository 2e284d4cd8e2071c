"""Who is alive: the worker and machine registries kept in Redis."""
