"""Deployments: artifacts sent to devices in phases, built on jobs."""
