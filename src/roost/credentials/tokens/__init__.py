"""Signed device tokens (JWT): issued once, listed, revoked."""
