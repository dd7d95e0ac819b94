"""Message templates: per-part files and message catalogues with shared email layouts,
per-store overrides, sandboxed rendering, and previews with sample data."""
