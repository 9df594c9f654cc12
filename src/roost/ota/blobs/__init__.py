"""Blob stores: where artifact bytes live (local files, or an S3-compatible service)."""
