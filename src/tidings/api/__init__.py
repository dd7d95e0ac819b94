"""The HTTP edge: application factory, credentials, problem responses, health."""
