-- Which catalog an apply recorded (for `drift` without an argument) and which saved plan file it
-- applied (a plan file is single-use).
ALTER TABLE cloud_reconciler_applies ADD COLUMN IF NOT EXISTS "catalogFingerprint" text;
ALTER TABLE cloud_reconciler_applies ADD COLUMN IF NOT EXISTS "planFileId" text UNIQUE;
