"""Importing and exporting devices in bulk (CSV or JSON)."""
