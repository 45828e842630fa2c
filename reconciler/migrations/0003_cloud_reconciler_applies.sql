-- One row per apply that changed something: what catalog was applied, for `drift` and for audit.
CREATE TABLE IF NOT EXISTS cloud_reconciler_applies (
    id bigserial PRIMARY KEY,
    "appliedAt" timestamptz NOT NULL DEFAULT now(),
    catalog jsonb NOT NULL,
    summary jsonb NOT NULL,
    "toolVersion" text NOT NULL
);
