-- LiteLLM's key tables with LiteLLM's (Prisma's) names and types, so the
-- sidecar can share an existing LiteLLM database. Everything is IF NOT
-- EXISTS: a table LiteLLM's own migrations created is never altered. The
-- store reads the key table's real columns at start and only touches the
-- ones it knows that exist.

CREATE TABLE IF NOT EXISTS "LiteLLM_VerificationToken" (
    token                  TEXT NOT NULL,
    key_name               TEXT,
    key_alias              TEXT,
    soft_budget_cooldown   BOOLEAN NOT NULL DEFAULT false,
    spend                  DOUBLE PRECISION NOT NULL DEFAULT 0.0,
    expires                TIMESTAMP(3),
    models                 TEXT[] DEFAULT ARRAY[]::TEXT[],
    aliases                JSONB NOT NULL DEFAULT '{}',
    config                 JSONB NOT NULL DEFAULT '{}',
    user_id                TEXT,
    team_id                TEXT,
    permissions            JSONB NOT NULL DEFAULT '{}',
    max_parallel_requests  INTEGER,
    metadata               JSONB NOT NULL DEFAULT '{}',
    blocked                BOOLEAN,
    tpm_limit              BIGINT,
    rpm_limit              BIGINT,
    max_budget             DOUBLE PRECISION,
    budget_duration        TEXT,
    budget_reset_at        TIMESTAMP(3),
    allowed_cache_controls TEXT[] DEFAULT ARRAY[]::TEXT[],
    allowed_routes         TEXT[] DEFAULT ARRAY[]::TEXT[],
    model_spend            JSONB NOT NULL DEFAULT '{}',
    model_max_budget       JSONB NOT NULL DEFAULT '{}',
    budget_id              TEXT,
    organization_id        TEXT,
    created_at             TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP,
    created_by             TEXT,
    updated_at             TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP,
    updated_by             TEXT,
    rotation_count         INTEGER DEFAULT 0,
    last_rotation_at       TIMESTAMP(3),

    CONSTRAINT "LiteLLM_VerificationToken_pkey" PRIMARY KEY (token)
);

-- Indexes only over columns that exist: an older LiteLLM table may lack some.
DO $$
DECLARE
    ix text[];
BEGIN
    FOREACH ix SLICE 1 IN ARRAY ARRAY[
        ['LiteLLM_VerificationToken_user_id_team_id_idx', 'user_id', 'team_id'],
        ['LiteLLM_VerificationToken_team_id_idx', 'team_id', NULL],
        ['LiteLLM_VerificationToken_budget_reset_at_expires_idx', 'budget_reset_at', 'expires']
    ] LOOP
        IF (SELECT count(*) FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name = 'LiteLLM_VerificationToken'
              AND column_name IN (ix[2], ix[3])) = cardinality(array_remove(ix[2:3], NULL)) THEN
            EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON "LiteLLM_VerificationToken" (%s)', ix[1],
                (SELECT string_agg(quote_ident(c), ', ') FROM unnest(ix[2:3]) AS c WHERE c IS NOT NULL));
        END IF;
    END LOOP;
END
$$;

CREATE TABLE IF NOT EXISTS "LiteLLM_AuditLog" (
    id                 TEXT NOT NULL,
    updated_at         TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    changed_by         TEXT NOT NULL DEFAULT '',
    changed_by_api_key TEXT NOT NULL DEFAULT '',
    action             TEXT NOT NULL,
    table_name         TEXT NOT NULL,
    object_id          TEXT NOT NULL,
    before_value       JSONB,
    updated_values     JSONB,

    CONSTRAINT "LiteLLM_AuditLog_pkey" PRIMARY KEY (id)
);

CREATE INDEX IF NOT EXISTS sidecar_audit_object_id_idx
    ON "LiteLLM_AuditLog" (object_id);

CREATE TABLE IF NOT EXISTS "LiteLLM_DeprecatedVerificationToken" (
    id              TEXT NOT NULL DEFAULT gen_random_uuid()::text,
    token           TEXT NOT NULL,
    active_token_id TEXT NOT NULL,
    revoke_at       TIMESTAMP(3) NOT NULL,
    created_at      TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "LiteLLM_DeprecatedVerificationToken_pkey" PRIMARY KEY (id)
);

CREATE UNIQUE INDEX IF NOT EXISTS "LiteLLM_DeprecatedVerificationToken_token_key"
    ON "LiteLLM_DeprecatedVerificationToken" (token);
CREATE INDEX IF NOT EXISTS sidecar_deprecated_active_token_id_idx
    ON "LiteLLM_DeprecatedVerificationToken" (active_token_id);
