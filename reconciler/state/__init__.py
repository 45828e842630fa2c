"""Current state as `model` values: readers of Postgres rows (`from_postgres`) and of owned Stripe
objects (`from_stripe`); and `subscriptions`, the one writer here: the listener's rows in
`cloud_stripe_events` and `cloud_subscriptions`."""
