-- Runs shared by every replica (DATABASE_URL set). One row a run.
CREATE TABLE sluice_runs (
    run_id           text PRIMARY KEY,
    connection_id    text NOT NULL,
    status           text NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    -- The run as the API reports it (RunRecord); `status` above is kept equal to its status.
    record           jsonb NOT NULL,
    -- The request, sealed with SLUICE_RUN_SECRETS_KEY; NULL once the run has ended.
    request          bytea,
    idempotency_key  text UNIQUE,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- Claims so far; the current claim's fencing token, replica and lease.
    attempts         integer NOT NULL DEFAULT 0,
    fence            bigint,
    replica          text,
    lease_until      timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false
);

-- One active run per connection, across every replica.
CREATE UNIQUE INDEX sluice_runs_one_active ON sluice_runs (connection_id)
    WHERE status IN ('queued', 'running');
-- The queue, oldest first.
CREATE INDEX sluice_runs_queued ON sluice_runs (created_at, run_id) WHERE status = 'queued';
-- Leases to reap.
CREATE INDEX sluice_runs_leases ON sluice_runs (lease_until) WHERE status = 'running';
CREATE INDEX sluice_runs_by_connection ON sluice_runs (connection_id, created_at DESC);

-- Fencing tokens: every claim takes the next one, so they only grow.
CREATE SEQUENCE sluice_fence;
