"""Roost: a self-hosted IoT device-fleet platform."""

__version__ = "0.1.0"
