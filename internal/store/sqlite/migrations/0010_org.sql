-- LiteLLM's team, user, team-membership and budget tables in SQLite types
-- (see 0001_init.sql for the encoding). Column names match LiteLLM's
-- Postgres schema; the budget table also has LiteLLM's later allowed_models column.

CREATE TABLE IF NOT EXISTS "LiteLLM_BudgetTable" (
    budget_id             TEXT PRIMARY KEY NOT NULL,
    max_budget            REAL,
    soft_budget           REAL,
    max_parallel_requests INTEGER,
    tpm_limit             INTEGER,
    rpm_limit             INTEGER,
    model_max_budget      TEXT,
    budget_duration       TEXT,
    budget_reset_at       TEXT,
    allowed_models        TEXT NOT NULL DEFAULT '[]',
    created_at            TEXT NOT NULL,
    created_by            TEXT NOT NULL,
    updated_at            TEXT NOT NULL,
    updated_by            TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS "LiteLLM_TeamTable" (
    team_id                 TEXT PRIMARY KEY NOT NULL,
    team_alias              TEXT,
    organization_id         TEXT,
    admins                  TEXT NOT NULL DEFAULT '[]',
    members                 TEXT NOT NULL DEFAULT '[]',
    members_with_roles      TEXT NOT NULL DEFAULT '[]',
    metadata                TEXT NOT NULL DEFAULT '{}',
    max_budget              REAL,
    soft_budget             REAL,
    spend                   REAL NOT NULL DEFAULT 0,
    models                  TEXT NOT NULL DEFAULT '[]',
    max_parallel_requests   INTEGER,
    tpm_limit               INTEGER,
    rpm_limit               INTEGER,
    budget_duration         TEXT,
    budget_reset_at         TEXT,
    blocked                 INTEGER NOT NULL DEFAULT 0,
    created_at              TEXT NOT NULL,
    updated_at              TEXT NOT NULL,
    model_spend             TEXT NOT NULL DEFAULT '{}',
    model_max_budget        TEXT NOT NULL DEFAULT '{}',
    team_member_permissions TEXT NOT NULL DEFAULT '[]'
);

CREATE INDEX IF NOT EXISTS "LiteLLM_TeamTable_organization_id_idx" ON "LiteLLM_TeamTable" (organization_id);
CREATE INDEX IF NOT EXISTS "LiteLLM_TeamTable_team_alias_idx" ON "LiteLLM_TeamTable" (team_alias);

CREATE TABLE IF NOT EXISTS "LiteLLM_UserTable" (
    user_id                TEXT PRIMARY KEY NOT NULL,
    user_alias             TEXT,
    team_id                TEXT,
    sso_user_id            TEXT UNIQUE,
    organization_id        TEXT,
    teams                  TEXT NOT NULL DEFAULT '[]',
    user_role              TEXT,
    max_budget             REAL,
    spend                  REAL NOT NULL DEFAULT 0,
    user_email             TEXT,
    models                 TEXT NOT NULL DEFAULT '[]',
    metadata               TEXT NOT NULL DEFAULT '{}',
    max_parallel_requests  INTEGER,
    tpm_limit              INTEGER,
    rpm_limit              INTEGER,
    budget_duration        TEXT,
    budget_reset_at        TEXT,
    allowed_cache_controls TEXT NOT NULL DEFAULT '[]',
    model_spend            TEXT NOT NULL DEFAULT '{}',
    model_max_budget       TEXT NOT NULL DEFAULT '{}',
    created_at             TEXT,
    updated_at             TEXT
);

CREATE INDEX IF NOT EXISTS "LiteLLM_UserTable_user_email_idx" ON "LiteLLM_UserTable" (user_email);

CREATE TABLE IF NOT EXISTS "LiteLLM_TeamMembership" (
    user_id   TEXT NOT NULL,
    team_id   TEXT NOT NULL,
    spend     REAL NOT NULL DEFAULT 0,
    budget_id TEXT REFERENCES "LiteLLM_BudgetTable" (budget_id) ON UPDATE CASCADE ON DELETE SET NULL,
    PRIMARY KEY (user_id, team_id)
);

CREATE INDEX IF NOT EXISTS "LiteLLM_TeamMembership_team_id_idx" ON "LiteLLM_TeamMembership" (team_id);
