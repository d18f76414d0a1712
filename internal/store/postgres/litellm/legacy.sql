-- LiteLLM's own DDL for the tables the store needs besides the key table,
-- copied from schema.sql (pg_dump of LiteLLM's migrations). Applied only on
-- a database with a key table but no _prisma_migrations, and only for a
-- table that is missing (the store checks first).

CREATE TABLE IF NOT EXISTS "LiteLLM_AuditLog" (
    id text NOT NULL,
    updated_at timestamp(3) without time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    changed_by text DEFAULT ''::text NOT NULL,
    changed_by_api_key text DEFAULT ''::text NOT NULL,
    action text NOT NULL,
    table_name text NOT NULL,
    object_id text NOT NULL,
    before_value jsonb,
    updated_values jsonb,
    CONSTRAINT "LiteLLM_AuditLog_pkey" PRIMARY KEY (id)
);

CREATE TABLE IF NOT EXISTS "LiteLLM_DeprecatedVerificationToken" (
    id text NOT NULL,
    token text NOT NULL,
    active_token_id text NOT NULL,
    revoke_at timestamp(3) without time zone NOT NULL,
    created_at timestamp(3) without time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    CONSTRAINT "LiteLLM_DeprecatedVerificationToken_pkey" PRIMARY KEY (id)
);
CREATE INDEX IF NOT EXISTS "LiteLLM_DeprecatedVerificationToken_revoke_at_idx" ON "LiteLLM_DeprecatedVerificationToken" USING btree (revoke_at);
CREATE UNIQUE INDEX IF NOT EXISTS "LiteLLM_DeprecatedVerificationToken_token_key" ON "LiteLLM_DeprecatedVerificationToken" USING btree (token);
CREATE INDEX IF NOT EXISTS "LiteLLM_DeprecatedVerificationToken_token_revoke_at_idx" ON "LiteLLM_DeprecatedVerificationToken" USING btree (token, revoke_at);
