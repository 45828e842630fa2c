-- The Stripe-clock second that the stored subscription state is as of: the `created` of the event
-- whose snapshot was stored, or Stripe's `Date` when the listener re-read the subscription. An event
-- from a later second carries a newer snapshot; one from an earlier second is older; only the same
-- second is ambiguous and makes the listener re-read the subscription from Stripe.
ALTER TABLE cloud_subscriptions ADD COLUMN IF NOT EXISTS "stateAsOf" bigint;
