"""Credentials: password hashing, signed tokens, API keys, rate limiting of credential checks."""
