package postgres

import (
	"fmt"
	"testing"

	"github.com/virtualkeys/sidecar/internal/store"
)

func TestDecodeOrg(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		ok   bool
		want []store.Event
	}{
		{`{"op":"UPDATE","token":"abc"}`, false, nil},
		{`{"op":"UPDATE","table":"LiteLLM_TeamTable","team_id":"t1"}`, true, []store.Event{{Kind: store.EventTeamChanged, Team: "t1"}}},
		{`{"op":"UPDATE","table":"LiteLLM_TeamTable","team_id":"t1","spend_only":true,"spend":2.5}`, true, []store.Event{{Kind: store.EventTeamSpend, Team: "t1", Spend: 2.5}}},
		{`{"op":"DELETE","table":"LiteLLM_UserTable","user_id":"u"}`, true, []store.Event{{Kind: store.EventUserChanged, User: "u"}}},
		{`{"op":"UPDATE","table":"LiteLLM_UserTable","user_id":"u","spend_only":true,"spend":1}`, true, []store.Event{{Kind: store.EventUserSpend, User: "u", Spend: 1}}},
		{`{"op":"INSERT","table":"LiteLLM_TeamMembership","team_id":"t","user_id":"u"}`, true, []store.Event{{Kind: store.EventMemberChanged, Team: "t", User: "u"}}},
		{`{"op":"UPDATE","table":"LiteLLM_TeamMembership","team_id":"t","user_id":"u","spend_only":true,"spend":3}`, true, []store.Event{{Kind: store.EventMemberSpend, Team: "t", User: "u", Spend: 3}}},
		{`{"op":"UPDATE","table":"LiteLLM_BudgetTable","budget_id":"b"}`, true, []store.Event{{Kind: store.EventBudgetChanged, Budget: "b"}}},
		// Anything unreadable resets: purging is always safe.
		{`{"op":"UPDATE","table":"LiteLLM_TeamTable"}`, true, []store.Event{{Kind: store.EventReset}}},
		{`{"op":"UPDATE","table":"LiteLLM_TeamMembership","team_id":"t"}`, true, []store.Event{{Kind: store.EventReset}}},
		{`{"op":"UPDATE","table":"LiteLLM_Other","x":1}`, true, []store.Event{{Kind: store.EventReset}}},
	} {
		got, ok := decodeOrg(tc.raw)
		if ok != tc.ok || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("decodeOrg(%s) = %+v, %v; want %+v, %v", tc.raw, got, ok, tc.want, tc.ok)
		}
	}
}
