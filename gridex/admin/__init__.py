"""Audit log and the admin and system endpoints."""
