package mgmt

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/virtualkeys/sidecar/internal/apierr"
	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
)

// spendLogs serves LiteLLM's GET /spend/logs: the LiteLLM_SpendLogs rows
// of metered requests, newest first, filtered by api_key (the key's hash,
// or the raw sk- key, which is hashed), request_id, and start_date /
// end_date (YYYY-MM-DD, end inclusive, UTC; or RFC 3339 instants, end
// exclusive). Unlike LiteLLM, a date range alone returns the rows in it,
// not per-day totals. At most store.DefaultSpendLogLimit rows.
func (a *API) spendLogs(r *http.Request, _ *caller) (any, error) {
	sw, ok := a.st.(store.SpendWriter)
	if !ok {
		return nil, errors.New("spend logs: the store does not keep them")
	}
	qs := r.URL.Query()
	q := store.SpendLogQuery{APIKey: qs.Get("api_key"), RequestID: qs.Get("request_id")}
	if strings.HasPrefix(q.APIKey, keys.Prefix) {
		q.APIKey = keys.HashHex(q.APIKey)
	}
	var err error
	if q.Start, err = parseSpendDate(qs.Get("start_date"), "start_date", false); err != nil {
		return nil, err
	}
	if q.End, err = parseSpendDate(qs.Get("end_date"), "end_date", true); err != nil {
		return nil, err
	}
	if !q.Start.IsZero() && !q.End.IsZero() && !q.Start.Before(q.End) {
		return nil, apierr.New(http.StatusBadRequest, apierr.TypeBadRequest, "start_date", "start_date must be before end_date")
	}
	rows, err := sw.SpendLogs(r.Context(), q)
	if err != nil {
		return nil, err
	}
	if rows == nil {
		rows = []store.SpendLog{}
	}
	for i := range rows {
		if rows[i].Metadata == nil {
			rows[i].Metadata = map[string]any{}
		}
	}
	return rows, nil
}

// parseSpendDate reads a date (a day, UTC) or an RFC 3339 instant. An end
// date names its whole day: the next midnight is returned.
func parseSpendDate(s, param string, end bool) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		if end {
			t = t.AddDate(0, 0, 1)
		}
		return t, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	return time.Time{}, apierr.New(http.StatusBadRequest, apierr.TypeBadRequest, param,
		param+" must be a date YYYY-MM-DD or an RFC 3339 time, got "+quoteShort(s))
}

func quoteShort(s string) string {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return `"` + s + `"`
}
