"""Artifacts: immutable uploaded files with their hashes, signed manifest and downloads."""
