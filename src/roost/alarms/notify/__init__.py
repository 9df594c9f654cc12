"""Notifications: channels (email, webhook, Slack), a durable outbox, grouping, silences."""
