"""Ingest: what every device door hands telemetry and events to, and the group-commit writer."""
