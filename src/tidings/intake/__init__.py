"""Intake: verify, normalize and validate what sources send, then store it once."""
