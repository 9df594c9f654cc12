"""Authenticated APT repositories built from the Debian-package artifacts of a tenant."""
