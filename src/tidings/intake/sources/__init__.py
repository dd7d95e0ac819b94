"""One adapter per source kind: verify the signature, map the payload to canonical events."""
