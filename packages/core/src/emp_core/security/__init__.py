"""Secrets at rest: the encrypted env files of ADR-001."""
