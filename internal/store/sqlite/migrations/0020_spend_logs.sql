-- LiteLLM's spend log in SQLite types (one row per metered request; JSON as
-- text, timestamps as sortable UTC text like the key table), and the record
-- of applied spend batches that makes a retried flush apply once.

CREATE TABLE IF NOT EXISTS "LiteLLM_SpendLogs" (
    request_id               TEXT PRIMARY KEY NOT NULL,
    call_type                TEXT NOT NULL,
    api_key                  TEXT NOT NULL DEFAULT '',
    spend                    REAL NOT NULL DEFAULT 0,
    total_tokens             INTEGER NOT NULL DEFAULT 0,
    prompt_tokens            INTEGER NOT NULL DEFAULT 0,
    completion_tokens        INTEGER NOT NULL DEFAULT 0,
    "startTime"              TEXT NOT NULL,
    "endTime"                TEXT NOT NULL,
    "completionStartTime"    TEXT,
    model                    TEXT NOT NULL DEFAULT '',
    model_id                 TEXT DEFAULT '',
    model_group              TEXT DEFAULT '',
    custom_llm_provider      TEXT DEFAULT '',
    api_base                 TEXT DEFAULT '',
    "user"                   TEXT DEFAULT '',
    metadata                 TEXT DEFAULT '{}',
    cache_hit                TEXT DEFAULT '',
    cache_key                TEXT DEFAULT '',
    request_tags             TEXT DEFAULT '[]',
    team_id                  TEXT,
    end_user                 TEXT,
    requester_ip_address     TEXT,
    messages                 TEXT DEFAULT '{}',
    response                 TEXT DEFAULT '{}',
    proxy_server_request     TEXT DEFAULT '{}',
    session_id               TEXT,
    status                   TEXT,
    mcp_namespaced_tool_name TEXT,
    organization_id          TEXT,
    agent_id                 TEXT,
    request_duration_ms      INTEGER
);

CREATE INDEX IF NOT EXISTS "LiteLLM_SpendLogs_end_user_idx" ON "LiteLLM_SpendLogs" (end_user);
CREATE INDEX IF NOT EXISTS "LiteLLM_SpendLogs_session_id_idx" ON "LiteLLM_SpendLogs" (session_id);
CREATE INDEX IF NOT EXISTS "LiteLLM_SpendLogs_startTime_idx" ON "LiteLLM_SpendLogs" ("startTime");
CREATE INDEX IF NOT EXISTS "LiteLLM_SpendLogs_startTime_request_id_idx" ON "LiteLLM_SpendLogs" ("startTime", request_id);
CREATE INDEX IF NOT EXISTS "LiteLLM_SpendLogs_api_key_idx" ON "LiteLLM_SpendLogs" (api_key);

CREATE TABLE IF NOT EXISTS sidecar_spend_batches (
    id         TEXT PRIMARY KEY NOT NULL,
    applied_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sidecar_spend_batches_applied_at_idx ON sidecar_spend_batches (applied_at);
