-- The channel's direction (consumption or generation; null when the source did not say and
-- the channel name does not follow the E*/B* convention). Rows stored before it stay null.
ALTER TABLE readings ADD COLUMN IF NOT EXISTS direction text
    CHECK (direction IS NULL OR direction IN ('consumption', 'generation'));
