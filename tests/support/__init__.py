"""Shared test helpers: databases, servers, event builders."""
