"""Commands to devices: queued, delivered, answered; scheduled and recurring."""
