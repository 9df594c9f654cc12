"""Agents: the fleet's roost-agent processes as they report themselves (API, console, metrics)."""
