-- The version of the step contract each plugin implements (0.1.0 or
-- 0.2.0), found at upload; every plugin stored before 0.2.0 was 0.1.0.
ALTER TABLE plugins ADD COLUMN contract TEXT NOT NULL DEFAULT '0.1.0';
