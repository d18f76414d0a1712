package mgmt

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	perm "github.com/virtualkeys/sidecar/internal/access"
	"github.com/virtualkeys/sidecar/internal/apierr"
	"github.com/virtualkeys/sidecar/internal/keys"
)

// credentialHeaders are read in this order, first non-empty one wins (spec
// section 4, the same order as the data plane).
var credentialHeaders = []string{
	"x-litellm-api-key",
	"Authorization",
	"API-Key",
	"x-api-key",
	"x-goog-api-key",
	"Ocp-Apim-Subscription-Key",
}

// caller is the authenticated client of one request.
type caller struct {
	admin bool
	hash  string      // the caller's key hash (master key: its SHA-256 hex)
	key   *keys.Key   // the caller's row (nil for the master key)
	acc   perm.Caller // the caller for LiteLLM's role checks (with a Directory)
}

// userID returns the caller's user_id ("" when none).
func (c *caller) userID() string {
	if c == nil || c.key == nil || c.key.UserID == nil {
		return ""
	}
	return *c.key.UserID
}

const paramNone = "None"

var (
	errNoKey = apierr.New(http.StatusUnauthorized, apierr.TypeAuth, paramNone,
		"Authentication Error, No api key passed in.")
	errMalformed = apierr.New(http.StatusUnauthorized, apierr.TypeAuth, paramNone,
		"Authentication Error, Malformed API Key passed in. Ensure Key has `Bearer ` prefix.")
	errBlocked = apierr.New(http.StatusUnauthorized, apierr.TypeAuth, paramNone,
		"Authentication Error, Key is blocked. Update via `/key/unblock` if you're an admin.")
)

// credential extracts the caller's key from the request headers.
func credential(r *http.Request) (string, *apierr.Error) {
	for _, h := range credentialHeaders {
		v := r.Header.Get(h)
		if v == "" {
			continue
		}
		if h == "Authorization" {
			scheme, rest, ok := strings.Cut(v, " ")
			if !ok && (strings.EqualFold(v, "Bearer") || strings.EqualFold(v, "Basic")) {
				return "", errNoKey // "Bearer " arrives trimmed
			}
			if !ok || (!strings.EqualFold(scheme, "Bearer") && !strings.EqualFold(scheme, "Basic")) {
				return "", errMalformed
			}
			v = strings.TrimSpace(rest)
		}
		if v == "" {
			return "", errNoKey
		}
		return v, nil
	}
	return "", errNoKey
}

// authenticate identifies the caller: the master key (compared in constant
// time, before any lookup) or a live virtual key.
func (a *API) authenticate(r *http.Request) (*caller, error) {
	raw, e := credential(r)
	if e != nil {
		return nil, e
	}
	sum := sha256.Sum256([]byte(raw))
	if subtle.ConstantTimeCompare(sum[:], a.masterHash[:]) == 1 {
		return &caller{admin: true, hash: keys.HashHex(raw)}, nil
	}
	if !strings.HasPrefix(raw, keys.Prefix) {
		return nil, apierr.New(http.StatusUnauthorized, apierr.TypeAuth, paramNone,
			fmt.Sprintf("LiteLLM Virtual Key expected. Received=%s****%s, expected to start with 'sk-'.", first4(raw), last4(raw)))
	}
	hash := keys.HashHex(raw)
	now := a.now()
	k, err := a.st.Lookup(r.Context(), hash)
	if err == nil && k.GraceUntil != nil && !now.Before(*k.GraceUntil) {
		err = keys.ErrNotFound
	}
	switch {
	case errors.Is(err, keys.ErrNotFound):
		return nil, apierr.New(http.StatusUnauthorized, apierr.TypeTokenNotFound, "key",
			fmt.Sprintf("Authentication Error, Invalid proxy server token passed. Received API Key = %s, Key Hash (Token) =%s. Unable to find token in cache or `LiteLLM_VerificationTokenTable`", keys.Name(raw), hash))
	case err != nil:
		return nil, fmt.Errorf("authenticate %s: %w", keys.Redact(hash), err)
	case k.IsBlocked():
		return nil, errBlocked
	case k.Expires != nil && k.Expires.Before(now):
		return nil, apierr.New(http.StatusUnauthorized, apierr.TypeExpiredKey, keys.Name(hash),
			fmt.Sprintf("Authentication Error - Expired Key. Key Expiry time %s and current time %s",
				k.Expires.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339)))
	}
	return &caller{hash: hash, key: k}, nil
}

func first4(s string) string {
	if len(s) <= 4 {
		return s
	}
	return s[:4]
}

func last4(s string) string {
	if len(s) <= 4 {
		return s
	}
	return s[len(s)-4:]
}
