"""registry-service against a real nats-server, SQLite and PostgreSQL."""
