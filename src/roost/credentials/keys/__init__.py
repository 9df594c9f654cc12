"""Symmetric device keys and the SAS tokens signed with them."""
