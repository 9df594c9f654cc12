"""roost-agent: the device side of Roost (runs on Python >= 3.9, e.g. a Raspberry Pi)."""

__version__ = "0.1.0"
