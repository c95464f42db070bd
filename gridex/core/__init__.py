"""Shared plumbing: configuration, database, errors, security, units, clock, jobs."""
