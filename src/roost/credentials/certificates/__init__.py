"""The platform CA and device certificates (mutual TLS on every door)."""
