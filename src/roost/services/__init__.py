"""Use cases, one module per area; every door (HTTP, MQTT, CLI) calls these same functions."""
