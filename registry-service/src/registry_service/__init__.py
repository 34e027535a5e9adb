"""registry-service: function CRUD per user, mirrored into the ``functions`` KV bucket."""
