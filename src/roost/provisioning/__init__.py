"""Provisioning: enrollment groups with derived keys, attestation bootstrap, offline bundles."""
