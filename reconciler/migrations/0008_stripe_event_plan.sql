-- The plan a Product/Price event is about (outcomes `apply` and `drift`), in a column of its own for
-- `drift` to read, instead of parsed out of the human-readable `detail` ("plan pro: …", unchanged).
-- Nullable without a default: a catalog-only change, no table rewrite, safe on a live table.
-- No backfill: `drift` reads older rows' plan from their `detail`, and so rows an older listener
-- still writes while this migration is applied (a backfill here would miss those).
ALTER TABLE cloud_stripe_events ADD COLUMN IF NOT EXISTS plan text;
