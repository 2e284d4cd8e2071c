"""The ``emp`` command: jobs, admin (users, tokens, database), env files, error patterns."""
