"""Rules, recipients, preferences and policy: pure decisions."""
