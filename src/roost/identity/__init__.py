"""Identity: tenants, users, logins and API keys."""
