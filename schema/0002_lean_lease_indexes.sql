-- bitsweep results database, version 2: one index fewer on the lease hot path.
--
-- leases_trial (leases by trial_id) was written on every Lease and read by nothing: the
-- coordinator finds a lease by its id (the primary key) and a trial's current lease through
-- trials.lease_id. Ad-hoc queries of a trial's leases still work (a scan of `leases`).
DROP INDEX IF EXISTS leases_trial;
