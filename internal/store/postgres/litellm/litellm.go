// Package litellm holds LiteLLM's Postgres schema as LiteLLM's own Prisma
// migrations leave it (see README.md): the store creates it on an empty
// database, and tests load it to run against LiteLLM's real tables.
package litellm

import (
	_ "embed"
)

// Schema is LiteLLM's schema dump: every table, index, foreign key and the
// rows of _prisma_migrations for the migrations it reflects. It names
// schema public and sets search_path to empty for the session (run it in
// its own transaction or session).
//
//go:embed schema.sql
var Schema string

// Legacy is LiteLLM's DDL for LiteLLM_AuditLog and
// LiteLLM_DeprecatedVerificationToken, with IF NOT EXISTS.
//
//go:embed legacy.sql
var Legacy string

// Tables LiteLLM's key table references through foreign keys: keys naming
// an unknown budget_id or organization_id are refused by Postgres.
const (
	BudgetTable       = "LiteLLM_BudgetTable"
	OrganizationTable = "LiteLLM_OrganizationTable"
)
