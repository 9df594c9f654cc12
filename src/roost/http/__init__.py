"""The REST API (FastAPI): routers per area, auth dependencies, problem+json errors."""
