package authz_test

import (
	"context"
	"slices"
	"testing"
)

// A key with an alias and a user but no team: the allow sets the headers
// it has and removes the ones it lacks, so a caller cannot supply its own
// x-litellm-team-id.
func TestAllowRemovesIdentityHeadersTheKeyLacks(t *testing.T) {
	srv, _, raw := benchServer(t)
	r := benchRequest(raw)
	r.Attributes.Request.Http.Headers["x-litellm-team-id"] = "forged-team"
	resp, err := srv.Check(context.Background(), r)
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("denied: %v %v", err, resp)
	}
	remove := resp.GetOkResponse().GetHeadersToRemove()
	if !slices.Contains(remove, "authorization") || !slices.Contains(remove, "x-litellm-team-id") {
		t.Errorf("headers_to_remove = %v, want the credential and x-litellm-team-id", remove)
	}
	set := map[string]bool{}
	for _, h := range resp.GetOkResponse().GetHeaders() {
		set[h.GetHeader().GetKey()] = true
	}
	for _, h := range remove {
		if set[h] {
			t.Errorf("%s is both set and removed", h)
		}
	}
	for _, h := range []string{"x-litellm-key-hash", "x-litellm-key-alias", "x-litellm-user-id", "x-litellm-model"} {
		if !set[h] {
			t.Errorf("%s not set", h)
		}
	}
}
