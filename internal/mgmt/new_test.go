package mgmt_test

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/virtualkeys/sidecar/internal/mgmt"
)

func TestNewValidates(t *testing.T) {
	st := openSQLite(t)
	tests := []struct {
		name    string
		cfg     mgmt.Config
		wantErr string
	}{
		{"no store", mgmt.Config{MasterKey: master}, "Store is required"},
		{"no master key", mgmt.Config{Store: st}, "MasterKey is required"},
		{"negative body cap", mgmt.Config{Store: st, MasterKey: master, MaxBodyBytes: -1}, "negative"},
		{"all wrong at once", mgmt.Config{}, "MasterKey is required"},
		{"minimal", mgmt.Config{Store: st, MasterKey: master}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			api, err := mgmt.New(tc.cfg)
			if tc.wantErr == "" {
				if err != nil || api == nil || api.Handler() == nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New error %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	api, err := mgmt.New(mgmt.Config{Store: openSQLite(t), MasterKey: master, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	for _, auth := range []string{master, master, ""} {
		req := httptest.NewRequest("POST", "/key/health", nil)
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		api.Handler().ServeHTTP(httptest.NewRecorder(), req)
	}
	want := `
# HELP sidecar_mgmt_requests_total Management API requests by route and HTTP status.
# TYPE sidecar_mgmt_requests_total counter
sidecar_mgmt_requests_total{code="200",route="/key/health"} 2
sidecar_mgmt_requests_total{code="401",route="/key/health"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "sidecar_mgmt_requests_total"); err != nil {
		t.Error(err)
	}
	if _, err := mgmt.New(mgmt.Config{Store: openSQLite(t), MasterKey: master, Registerer: reg}); err == nil {
		t.Error("registering twice on one registry should fail")
	}
}
