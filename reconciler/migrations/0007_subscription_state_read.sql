-- Whether the stored subscription state was read from Stripe (true) or is an event's snapshot.
-- A read is dated by Stripe's `Date` header, which may be a second later than the moment the state
-- was read: an event from that second or the one before it is ambiguous, and makes the listener
-- read the subscription again, where an event snapshot's own second is the only ambiguous one.
ALTER TABLE cloud_subscriptions ADD COLUMN IF NOT EXISTS "stateRead" boolean NOT NULL DEFAULT false;
