-- cloud_plans exactly as kuploy-cloud's billing guide gives it (quoted camelCase columns), except
-- "maxStorageBytes", which is bigint: the guide's integer overflows at 2 GiB.
-- IF NOT EXISTS: kuploy-cloud may have created the table already; its shape is checked before this runs.
CREATE TABLE IF NOT EXISTS cloud_plans (
    "planId" text PRIMARY KEY,
    name text NOT NULL,
    "stripeProductId" text,
    "stripePriceId" text,
    price integer NOT NULL DEFAULT 0,
    currency text,
    "billingCycle" text,
    "maxProjects" integer NOT NULL DEFAULT 0,
    "maxApps" integer NOT NULL DEFAULT 0,
    "maxDatabases" integer NOT NULL DEFAULT 0,
    "maxTeamMembers" integer NOT NULL DEFAULT 0,
    "maxDomains" integer NOT NULL DEFAULT 0,
    "maxCustomDomains" integer NOT NULL DEFAULT 0,
    "maxFreeSubdomains" integer NOT NULL DEFAULT 0,
    "maxPurchasableDomains" integer NOT NULL DEFAULT 0,
    "maxInstances" integer NOT NULL DEFAULT 0,
    "maxStorageBytes" bigint NOT NULL DEFAULT 0,
    "buildMinutesPerMonth" integer NOT NULL DEFAULT 0,
    features jsonb NOT NULL DEFAULT '{}'::jsonb,
    "isDefault" boolean NOT NULL DEFAULT false,
    "isActive" boolean NOT NULL DEFAULT true,
    description text
);
