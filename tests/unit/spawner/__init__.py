"""spawner-service unit tests: output capture, job decisions with a fake runtime and store."""
