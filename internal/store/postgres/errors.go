package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/virtualkeys/sidecar/internal/keys"
)

// fkDetail parses a foreign-key violation's detail:
//
//	Key (budget_id)=(b-1) is not present in table "LiteLLM_BudgetTable".
//	Key (token)=(abc) is still referenced from table "LiteLLM_JWTKeyMapping".
var fkDetail = regexp.MustCompile(`^Key \(([^)]*)\)=\((.*)\) is (not present in|still referenced from) table "([^"]*)"`)

// translate turns driver errors into the keys sentinels, in the manner of
// river's interpretError; anything else is returned as is. k (may be nil)
// supplies the values a unique violation names.
//
//   - 23505 unique violation on the key table: *keys.ConflictError
//   - 23503 foreign key violation: *keys.ReferenceError naming the column
//     (budget_id, organization_id, ...), or an *keys.InvalidError when the
//     key is still referenced from another table
//   - 22003 numeric value out of range: *keys.InvalidError
//   - unreachable server, broken connection, statement timeout, context
//     deadline, server shutting down: keys.ErrUnavailable (the cause kept)
func translate(err error, k *keys.Key) error {
	if err == nil || errors.Is(err, keys.ErrUnavailable) {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "23505":
			if ce := conflict(pgErr, k); ce != nil {
				return ce
			}
		case "23503":
			return reference(pgErr)
		case "22003":
			return &keys.InvalidError{Reason: "a value is out of range for its database column (" + pgErr.Message + ")"}
		}
		if unavailableCode(pgErr.Code) {
			return fmt.Errorf("%w: %w", keys.ErrUnavailable, err)
		}
		return err
	}
	if unavailable(err) {
		return fmt.Errorf("%w: %w", keys.ErrUnavailable, err)
	}
	return err
}

// unavailableCode: SQLSTATEs that say the server cannot answer now, not
// that the request is wrong.
func unavailableCode(code string) bool {
	switch {
	case strings.HasPrefix(code, "08"): // connection exception
		return true
	case strings.HasPrefix(code, "53"): // insufficient resources (too many connections, out of memory/disk)
		return true
	}
	switch code {
	case "57014", // query_canceled: statement_timeout or a cancel request
		"57P01", "57P02", "57P03", // admin/crash shutdown, cannot connect now
		"55P03",          // lock_not_available (lock_timeout)
		"40001", "40P01", // serialization failure, deadlock: retry
		"25006": // read_only_sql_transaction: a standby (failover in progress)
		return true
	}
	return false
}

// unavailable reports errors from below SQL: no connection, a broken one,
// or a deadline.
func unavailable(err error) bool {
	var ce *pgconn.ConnectError
	var ne net.Error
	switch {
	case errors.As(err, &ce), errors.As(err, &ne):
		return true
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return true
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		return true
	case pgconn.Timeout(err), pgconn.SafeToRetry(err):
		return true
	}
	// pgx reports a connection it already closed by message only.
	return strings.Contains(err.Error(), "conn closed")
}

// conflict names the unique field a 23505 on the key table collided on.
func conflict(pgErr *pgconn.PgError, k *keys.Key) *keys.ConflictError {
	if pgErr.TableName != keyTableName {
		return nil
	}
	switch {
	case strings.Contains(pgErr.ConstraintName, "key_alias"):
		v := ""
		if k != nil && k.KeyAlias != nil {
			v = *k.KeyAlias
		}
		return &keys.ConflictError{Field: "key_alias", Value: v}
	case strings.HasSuffix(pgErr.ConstraintName, "_pkey"):
		v := ""
		if k != nil {
			v = k.Token
		}
		return &keys.ConflictError{Field: "token", Value: v}
	}
	return nil
}

// reference turns a 23503 into the field that refers to nothing. The
// column comes from the detail, else from LiteLLM's constraint name
// ("<table>_<column>_fkey").
func reference(pgErr *pgconn.PgError) error {
	if m := fkDetail.FindStringSubmatch(pgErr.Detail); m != nil {
		if m[3] == "still referenced from" {
			return &keys.InvalidError{Field: "key", Reason: "the key is still referenced from LiteLLM table " + m[4] + "; remove that reference first"}
		}
		return &keys.ReferenceError{Field: m[1], Value: m[2], Table: m[4]}
	}
	field := strings.TrimSuffix(strings.TrimPrefix(pgErr.ConstraintName, pgErr.TableName+"_"), "_fkey")
	if field == "" {
		field = pgErr.ConstraintName
	}
	return &keys.ReferenceError{Field: field}
}
