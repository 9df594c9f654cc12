"""Device presence: online, offline, never seen; heartbeats, history and clock skew."""
