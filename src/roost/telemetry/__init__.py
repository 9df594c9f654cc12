"""Telemetry and events: ingest on every door, the storage engine, queries, live streams, consumer
groups.
"""
