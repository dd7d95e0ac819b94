"""One module per provider; one base per channel."""
