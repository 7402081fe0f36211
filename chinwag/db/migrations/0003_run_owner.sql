-- Runs know the process that executes them, and when it last said it was alive.
--
-- Several workers or hosts share one database: a process starting up (or its periodic sweep) must end only runs
-- whose process is dead, never those of live neighbours. Each process heartbeats its running runs (one UPDATE every
-- ~10 s); a running run whose heartbeat is stale was left by a dead process. Rows from before this migration have no
-- heartbeat: their start time stands in for it.

ALTER TABLE runs ADD COLUMN owner text;
ALTER TABLE runs ADD COLUMN heartbeat_at timestamptz;
CREATE INDEX runs_running_owner_idx ON runs (owner) WHERE status = 'running';
