"""EMP job queue domain: typed models, settings, the Redis key schema and the Function library."""

__version__ = "0.1.0"
