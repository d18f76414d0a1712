package authz

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"
)

// DecisionLog configures the opt-in decision log: one structured line per
// logged Check with the request id, the key's hash prefix (never the key),
// alias, team, user, model, reason, HTTP status and how long it took.
type DecisionLog struct {
	// Logger receives the lines. nil turns the log off (the default): the
	// Check then pays one nil comparison.
	Logger *slog.Logger
	// AllowSample is the fraction of allowed requests logged, 0 to 1.
	// Denials and fail-closed decisions are always logged.
	AllowSample float64
}

// logDecision writes one decision line. It runs only when the log is on,
// so recomputing the credential's hash here keeps the hot path as it is.
func (a *Authorizer) logDecision(ctx context.Context, r *Request, d *Decision, took time.Duration) {
	if d.Allowed && (a.dlogSample <= 0 || (a.dlogSample < 1 && rand.Float64() >= a.dlogSample)) {
		return
	}
	status, level := http.StatusOK, slog.LevelInfo
	if d.Err != nil {
		status = d.Err.Status
		if status == http.StatusServiceUnavailable {
			level = slog.LevelWarn
		}
	}
	attrs := make([]slog.Attr, 0, 11)
	attrs = append(attrs,
		slog.String("request_id", r.header("x-request-id")),
		slog.String("method", r.Method),
		slog.String("reason", d.Reason.String()),
		slog.Int("status", status),
		slog.Duration("duration", took))
	if e := d.Entry; e != nil {
		attrs = append(attrs, slog.String("key_hash", e.Key.Token[:min(12, len(e.Key.Token))]))
		for _, kv := range []struct {
			name string
			v    *string
		}{{"key_alias", e.Key.KeyAlias}, {"team_id", e.Key.TeamID}, {"user_id", e.Key.UserID}} {
			if kv.v != nil {
				attrs = append(attrs, slog.String(kv.name, *kv.v))
			}
		}
	} else if c := a.credential(r); c.key != "" {
		h := sha256.Sum256([]byte(c.key))
		attrs = append(attrs, slog.String("key_hash", hex.EncodeToString(h[:6])))
	}
	if d.Model != "" {
		attrs = append(attrs, slog.String("model", d.Model))
	}
	if d.Err != nil {
		attrs = append(attrs, slog.String("type", d.Err.Type))
	}
	a.dlog.LogAttrs(ctx, level, "decision", attrs...)
}
