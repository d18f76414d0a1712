-- The sidecar's own record of applied spend batches, which makes a retried
-- flush (after a commit whose answer was lost) apply once. LiteLLM's
-- "LiteLLM_SpendLogs", where each metered request is written, is LiteLLM's
-- table: it exists on a LiteLLM database and on one the store created.
CREATE TABLE IF NOT EXISTS litellm_sidecar.spend_batches (
    id         text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS spend_batches_applied_at_idx ON litellm_sidecar.spend_batches (applied_at);
