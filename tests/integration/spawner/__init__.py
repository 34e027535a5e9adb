"""spawner-service against a real Docker engine and a real nats-server."""
