"""Tests of software delivery (issue 14)."""
