"""Consumers: apps holding keys with grants on chosen devices and sensors."""
