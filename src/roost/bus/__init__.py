"""The message bus: an in-process backend for one machine, NATS JetStream for several."""
