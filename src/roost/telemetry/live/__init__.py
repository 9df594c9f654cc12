"""Live streams of committed telemetry and events."""
