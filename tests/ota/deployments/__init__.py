"""Tests of OTA deployments."""
