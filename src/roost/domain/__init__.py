"""Pure domain logic and types: no IO, no framework."""
