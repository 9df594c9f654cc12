"""Reading telemetry and events back: raw, aggregated, latest values."""
