-- The webhook listener's state (`kuploy-reconciler listen`).
--
-- cloud_stripe_events: one row per Stripe event id, inserted first in the transaction that stores
-- the event's effect, so the primary key makes every event take effect exactly once (a duplicate,
-- or a copy racing it on another connection or replica, finds the row and does nothing).
CREATE TABLE IF NOT EXISTS cloud_stripe_events (
    id text PRIMARY KEY,
    type text NOT NULL,
    "objectId" text,
    created timestamptz NOT NULL,
    livemode boolean NOT NULL DEFAULT false,
    "receivedAt" timestamptz NOT NULL,
    "processedAt" timestamptz,
    outcome text NOT NULL,
    detail text
);
CREATE INDEX IF NOT EXISTS cloud_stripe_events_outcome_idx ON cloud_stripe_events (outcome, created);

-- cloud_subscriptions: one row per Stripe subscription, as Stripe last said it was (the listener
-- re-reads the subscription on every event). "planId" is NULL with "priceUnknown" set when the
-- Price is not one of cloud_plans' (current or owned-by-slug): such a row is kept, never dropped.
CREATE TABLE IF NOT EXISTS cloud_subscriptions (
    "stripeSubscriptionId" text PRIMARY KEY,
    "organizationId" text,
    "stripeCustomerId" text,
    "stripePriceId" text,
    "planId" text,
    "priceUnknown" boolean NOT NULL DEFAULT false,
    status text NOT NULL,
    "currentPeriodEnd" timestamptz,
    "cancelAtPeriodEnd" boolean NOT NULL DEFAULT false,
    "latestInvoiceId" text,
    "latestInvoiceStatus" text,
    "latestInvoiceCreated" timestamptz,
    "updatedAt" timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS cloud_subscriptions_organization_idx ON cloud_subscriptions ("organizationId");
CREATE INDEX IF NOT EXISTS cloud_subscriptions_price_idx ON cloud_subscriptions ("stripePriceId");
