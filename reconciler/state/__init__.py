"""Readers of current state: Postgres rows and owned Stripe objects, as `model` values."""
