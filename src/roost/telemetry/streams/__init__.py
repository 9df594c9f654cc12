"""Consumer groups: workers pulling the ingest log by offset."""
