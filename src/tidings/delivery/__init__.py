"""Delivery: durable jobs, workers that claim and send them, retries and dead letters."""
