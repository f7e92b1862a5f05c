-- bitsweep results database, version 4: leases lost to dead workers are counted apart.
--
-- trials.lost_leases: leases of the trial that expired (the worker died or hung). A trial fails
-- after max_attempts reported errors (attempts - lost_leases), or after a larger cap of lost
-- leases (docs/SERVICE.md). Leases a worker returns (ReturnLeases) count as neither.
ALTER TABLE trials ADD COLUMN lost_leases INTEGER NOT NULL DEFAULT 0;
