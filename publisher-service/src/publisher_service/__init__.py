"""publisher-service: activations over HTTP, queued on NATS JetStream, and their records."""
