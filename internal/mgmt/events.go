package mgmt

import (
	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/webhook"
)

// EventSink receives the key events of successful mutations, after they
// are committed (LiteLLM's KeyManagementEventHooks). Send must not block;
// *webhook.Sender satisfies it.
type EventSink interface {
	Send(webhook.Event)
}

// keyEvents names the webhook event and message of each audited action.
// LiteLLM names key_created ("API Key Created"); the others follow it.
var keyEvents = map[string][2]string{
	keys.ActionCreated:     {"key_created", "API Key Created"},
	keys.ActionUpdated:     {"key_updated", "API Key Updated"},
	keys.ActionRegenerated: {"key_regenerated", "API Key Regenerated"},
	keys.ActionDeleted:     {"key_deleted", "API Key Deleted"},
	keys.ActionBlocked:     {"key_blocked", "API Key Blocked"},
	keys.ActionUnblocked:   {"key_unblocked", "API Key Unblocked"},
}

// keyEvent builds LiteLLM's WebhookEvent for a key mutation from the row
// after it (before it, for a deletion). It carries the key's hash, never a
// raw key. As LiteLLM's key_created event, a key without a team reports
// team_id "Default Team".
func keyEvent(action, hash string, row map[string]any) (webhook.Event, bool) {
	names, ok := keyEvents[action]
	if !ok {
		return webhook.Event{}, false
	}
	str := func(k string) *string {
		if s, ok := row[k].(string); ok && s != "" {
			return &s
		}
		return nil
	}
	ev := webhook.Event{
		Event: names[0], EventGroup: "key", EventMessage: names[1],
		Token: &hash, KeyAlias: str("key_alias"), UserID: str("user_id"), TeamID: str("team_id"),
	}
	if ev.TeamID == nil {
		def := "Default Team"
		ev.TeamID = &def
	}
	if f, ok := row["spend"].(float64); ok {
		ev.Spend = f
	}
	if f, ok := row["max_budget"].(float64); ok {
		ev.MaxBudget = &f
	}
	if md, ok := row["metadata"].(map[string]any); ok {
		if f, ok := md["soft_budget"].(float64); ok {
			ev.SoftBudget = &f
		}
	}
	return ev, true
}
