"""Alarms, rules, notifications and reference data: Roost acts on what devices say (issue 13)."""
