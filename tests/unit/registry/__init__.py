"""registry-service unit tests (fake catalog, SQLite)."""
