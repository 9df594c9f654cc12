"""Devices with their tags, group memberships, sensors and components."""
