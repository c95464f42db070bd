"""Runtime configuration: settings that admins change while Gridex runs (fee, gate closure,
offline threshold, emission factors, alert thresholds), stored in the database and applied by
every process without a restart."""
