-- LiteLLM's key tables in SQLite types (spec section 2). Column names match
-- LiteLLM's Postgres schema. JSON objects and arrays are JSON text;
-- timestamps are UTC text "YYYY-MM-DDTHH:MM:SS.mmmZ" (sortable as text);
-- booleans are 0/1.

CREATE TABLE IF NOT EXISTS "LiteLLM_VerificationToken" (
    token                  TEXT PRIMARY KEY NOT NULL,
    key_name               TEXT,
    key_alias              TEXT,
    soft_budget_cooldown   INTEGER NOT NULL DEFAULT 0,
    spend                  REAL NOT NULL DEFAULT 0,
    expires                TEXT,
    models                 TEXT NOT NULL DEFAULT '[]',
    aliases                TEXT NOT NULL DEFAULT '{}',
    config                 TEXT NOT NULL DEFAULT '{}',
    user_id                TEXT,
    team_id                TEXT,
    permissions            TEXT NOT NULL DEFAULT '{}',
    max_parallel_requests  INTEGER,
    metadata               TEXT NOT NULL DEFAULT '{}',
    blocked                INTEGER,
    tpm_limit              INTEGER,
    rpm_limit              INTEGER,
    max_budget             REAL,
    budget_duration        TEXT,
    budget_reset_at        TEXT,
    allowed_cache_controls TEXT NOT NULL DEFAULT '[]',
    allowed_routes         TEXT NOT NULL DEFAULT '[]',
    model_spend            TEXT NOT NULL DEFAULT '{}',
    model_max_budget       TEXT NOT NULL DEFAULT '{}',
    budget_id              TEXT,
    organization_id        TEXT,
    created_at             TEXT,
    created_by             TEXT,
    updated_at             TEXT,
    updated_by             TEXT,
    rotation_count         INTEGER NOT NULL DEFAULT 0,
    last_rotation_at       TEXT
);

CREATE UNIQUE INDEX IF NOT EXISTS "LiteLLM_VerificationToken_key_alias_key"
    ON "LiteLLM_VerificationToken" (key_alias);
CREATE INDEX IF NOT EXISTS "LiteLLM_VerificationToken_user_id_team_id_idx"
    ON "LiteLLM_VerificationToken" (user_id, team_id);
CREATE INDEX IF NOT EXISTS "LiteLLM_VerificationToken_team_id_idx"
    ON "LiteLLM_VerificationToken" (team_id);
CREATE INDEX IF NOT EXISTS "LiteLLM_VerificationToken_budget_reset_at_expires_idx"
    ON "LiteLLM_VerificationToken" (budget_reset_at, expires);
CREATE INDEX IF NOT EXISTS "LiteLLM_VerificationToken_organization_id_idx"
    ON "LiteLLM_VerificationToken" (organization_id);

CREATE TABLE IF NOT EXISTS "LiteLLM_AuditLog" (
    id                 TEXT PRIMARY KEY NOT NULL,
    updated_at         TEXT NOT NULL,
    changed_by         TEXT NOT NULL DEFAULT '',
    changed_by_api_key TEXT NOT NULL DEFAULT '',
    action             TEXT NOT NULL,
    table_name         TEXT NOT NULL,
    object_id          TEXT NOT NULL,
    before_value       TEXT,
    updated_values     TEXT
);

CREATE INDEX IF NOT EXISTS "LiteLLM_AuditLog_object_id_idx"
    ON "LiteLLM_AuditLog" (object_id);

CREATE TABLE IF NOT EXISTS "LiteLLM_DeprecatedVerificationToken" (
    token           TEXT PRIMARY KEY NOT NULL,
    active_token_id TEXT NOT NULL,
    revoke_at       TEXT NOT NULL,
    created_at      TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS "LiteLLM_DeprecatedVerificationToken_active_token_id_idx"
    ON "LiteLLM_DeprecatedVerificationToken" (active_token_id);
