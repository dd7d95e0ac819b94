"""Message templates: on-disk store with per-store overrides, and sandboxed rendering."""
