"""Rules: conditions over committed device data, evaluated incrementally, and their actions."""
