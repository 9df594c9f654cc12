"""Shared building blocks of every capability: actors and roles, ids, the device identity, the
ingest contract, durable timers, the device link, abuse limits.
"""
