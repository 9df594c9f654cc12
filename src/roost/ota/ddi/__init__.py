"""The hawkBit Direct Device Integration (DDI) API, so existing update clients work unchanged."""
