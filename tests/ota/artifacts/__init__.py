"""Tests of artifacts: uploads, blob stores, signing and downloads (issue 14)."""
