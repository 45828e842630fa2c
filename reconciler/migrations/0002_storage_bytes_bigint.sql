-- A cloud_plans created from the guide's schema has an integer "maxStorageBytes" (max 2 GiB).
-- Widening to bigint keeps every value; a no-op where 0001 created the table.
ALTER TABLE cloud_plans ALTER COLUMN "maxStorageBytes" TYPE bigint;
