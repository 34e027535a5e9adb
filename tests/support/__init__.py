"""Shared test helpers: infrastructure policy, a real nats-server, databases and keys."""
