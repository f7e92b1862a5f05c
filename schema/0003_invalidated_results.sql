-- bitsweep results database, version 3: results can be taken back.
--
-- results.invalidated_ms: set by InvalidateTrial (`bitsweep trials invalidate`); such a result is
-- no longer served by deduplication, so later sweeps evaluate its config again. NULL: valid.
ALTER TABLE results ADD COLUMN invalidated_ms INTEGER;
