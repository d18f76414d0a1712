// Package authz decides LLM requests as a LiteLLM proxy would, from the key
// cache, and serves the decisions as Envoy's ext_authz gRPC service
// (envoy.service.auth.v3.Authorization). The decision core (Authorizer) is
// shared with the HTTP authz mode (package httpauthz).
//
// The checks run in LiteLLM's order, each with its exact denial (status,
// type, param, message): no credential; malformed Authorization; the
// master key (allowed); not a virtual key; unknown key; blocked; model not
// allowed; then, with Config.Org, LiteLLM's team and user checks (team
// blocked, team models, team-member model scope, a personal key's user
// models: org.go); expired; over budget; then the team, personal-user and
// team-member budgets. On allow the credential header(s) are
// removed, so the virtual key never reaches the provider, and the key's
// identity is passed upstream as headers and dynamic metadata.
//
// Fail closed: a store that cannot answer for an uncached key, or a
// request whose deadline passed, never allows. Such a Check is not a policy
// decision, so the gRPC face returns it as an error (codes.Unavailable or
// codes.DeadlineExceeded) and Envoy applies its status_on_error (503). The
// Decision carries a 503 "internal_server_error" for the HTTP face. Keys
// already cached keep working while the store is down.
//
// Choices where LiteLLM's behaviour is loose:
//   - "Authorization: Basic <v>" takes <v> as the key, unchanged (no base64
//     decoding), as LiteLLM strips the prefix; the scheme is matched
//     case-insensitively. Any other scheme is the "Malformed API Key" denial.
//   - The expiry message prints times as Python's str() of an aware UTC
//     datetime: "2025-05-14 10:30:00+00:00", with ".123000" microseconds
//     when non-zero. Budget numbers print as Python's str(float): "10.0",
//     "0.30000000000000004", "1e+16".
//   - The model is read from a possibly truncated body (Envoy's
//     allow_partial_message) by a scanner that only looks at top-level
//     members. A "model" that is complete before the cut is checked; one cut
//     off is not found, and then the model check is skipped, as for a
//     request that names no model. Size Envoy's max_request_bytes so that
//     real bodies arrive whole. A body that repeats "model" must have every
//     occurrence allowed.
//   - A key found through a rotated-out token in its grace period is allowed
//     until the grace ends and is reported with the active key's hash. After
//     that it is denied as unknown.
//
// Identity passed upstream on allow, as headers with a configurable prefix
// (default "x-litellm-") and as dynamic metadata: key-hash (key_hash),
// key-alias, user-id, team-id (when set) and model (when found).
package authz

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/virtualkeys/sidecar/internal/apierr"
	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/keys"
)

// KeyCache is what the Authorizer needs of the cache; *cache.Cache
// satisfies it.
type KeyCache interface {
	Get(ctx context.Context, hash [32]byte) (*cache.Entry, error)
}

// DefaultIdentityPrefix prefixes identity header names when
// Config.IdentityHeaderPrefix is empty.
const DefaultIdentityPrefix = "x-litellm-"

// Config configures an Authorizer.
type Config struct {
	// Cache finds keys by hash. Required.
	Cache KeyCache
	// MasterKey is allowed on the data plane. Required.
	MasterKey string
	// Org finds keys' teams, users and team memberships for LiteLLM's team
	// and user checks. nil skips those checks.
	Org OrgCache
	// AccessGroups are the model access groups a key's models may name.
	AccessGroups keys.AccessGroups
	// KeyHeader, when set, is the only header the key is read from.
	KeyHeader string
	// ModelHeader, when set, names the model when body and path do not.
	ModelHeader string
	// IdentityHeaderPrefix prefixes the identity headers ("" = DefaultIdentityPrefix).
	IdentityHeaderPrefix string
	// Now is the clock. nil means time.Now.
	Now func() time.Time
	// Registerer receives the decision metrics. nil registers nothing.
	Registerer prometheus.Registerer
	// Logger receives internal errors (never on the hot path). nil discards.
	Logger *slog.Logger
	// DecisionLog is the opt-in per-request decision log (off when its
	// Logger is nil).
	DecisionLog DecisionLog
	// ModelSpend is each key's spend per model_max_budget window
	// (*modelbudget.Tracker). nil = nothing metered: every window reads 0,
	// so only a budget_limit of 0 denies.
	ModelSpend ModelSpend
}

// Reason names a decision, for metrics and logs.
type Reason uint8

// Reasons, in check order.
const (
	ReasonAllowed Reason = iota
	ReasonMasterKey
	ReasonNoCredential
	ReasonMalformed
	ReasonNotVirtualKey
	ReasonUnknownKey
	ReasonBlocked
	ReasonModelDenied
	ReasonExpired
	ReasonBudget
	ReasonUnavailable
	numReasons
)

var reasonNames = [numReasons]string{"allowed", "master_key", "no_credential", "malformed_credential", "not_virtual_key", "unknown_key", "blocked", "model_not_allowed", "expired", "budget_exceeded", "unavailable"}

func (r Reason) String() string { return reasonNames[r] }

// Decision is the outcome of one request.
type Decision struct {
	Allowed bool
	Reason  Reason
	// Err is the denial (nil when allowed). Status 503 means the decision
	// could not be made (store unavailable, deadline passed): an authz
	// error, not a policy decision.
	Err *apierr.Error
	// Entry is the key allowed (nil for the master key).
	Entry *cache.Entry
	// Model is the model the request is for ("" when none was found).
	Model string
	// RemoveHeaders and RemoveQuery name where the credential came in.
	RemoveHeaders []string
	RemoveQuery   []string
}

// Identity header names, after the prefix.
const (
	idKeyHash  = "key-hash"
	idKeyAlias = "key-alias"
	idUserID   = "user-id"
	idTeamID   = "team-id"
	idModel    = "model"
)

// Authorizer makes decisions. Create it with New; it is safe for concurrent use.
type Authorizer struct {
	cache       KeyCache
	org         OrgCache
	master      [32]byte
	groups      keys.AccessGroups
	keyHeader   string
	modelHeader string
	prefix      string
	now         func() time.Time
	log         *slog.Logger
	dlog        *slog.Logger
	dlogSample  float64
	modelSpend  ModelSpend

	decisions [numReasons]prometheus.Counter
	latency   prometheus.Histogram
}

// New validates cfg and builds the Authorizer.
func New(cfg Config) (*Authorizer, error) {
	var errs []error
	if cfg.Cache == nil {
		errs = append(errs, errors.New("authz: Cache is required"))
	}
	if cfg.MasterKey == "" {
		errs = append(errs, errors.New("authz: MasterKey is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	a := &Authorizer{
		cache: cfg.Cache, org: cfg.Org, master: sha256.Sum256([]byte(cfg.MasterKey)), groups: cfg.AccessGroups,
		keyHeader: strings.ToLower(cfg.KeyHeader), modelHeader: strings.ToLower(cfg.ModelHeader),
		prefix: strings.ToLower(cfg.IdentityHeaderPrefix), now: cfg.Now, log: cfg.Logger,
		dlog: cfg.DecisionLog.Logger, dlogSample: cfg.DecisionLog.AllowSample, modelSpend: cfg.ModelSpend,
	}
	if a.modelSpend == nil {
		a.modelSpend = noModelSpend{}
	}
	if a.prefix == "" {
		a.prefix = DefaultIdentityPrefix
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidecar_authz_decisions_total", Help: "Authorization decisions by reason.",
	}, []string{"reason"})
	for i := range a.decisions {
		a.decisions[i] = vec.WithLabelValues(Reason(i).String())
	}
	a.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "sidecar_authz_check_duration_seconds",
		Help:    "Time to decide one request, in seconds (µs-scale buckets).",
		Buckets: []float64{5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2},
	})
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{vec, a.latency} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return a, nil
}

// IdentityHeader returns the full name of an identity header ("key-hash",
// "key-alias", "user-id", "team-id", "model").
func (a *Authorizer) IdentityHeader(name string) string { return a.prefix + name }

// Identity returns the identity headers of an allowed decision, name and
// value, for the HTTP mode.
func (a *Authorizer) Identity(d *Decision) [][2]string {
	var out [][2]string
	if e := d.Entry; e != nil {
		out = append(out, [2]string{a.prefix + idKeyHash, e.Key.Token})
		for _, kv := range []struct {
			name string
			v    *string
		}{{idKeyAlias, e.Key.KeyAlias}, {idUserID, e.Key.UserID}, {idTeamID, e.Key.TeamID}} {
			if kv.v != nil && *kv.v != "" {
				out = append(out, [2]string{a.prefix + kv.name, *kv.v})
			}
		}
	}
	if d.Model != "" {
		out = append(out, [2]string{a.prefix + idModel, d.Model})
	}
	return out
}

// Unset returns the identity headers an allowed decision does not set, in
// order: they must be removed from the request, or a caller could send, say,
// x-litellm-team-id itself for a key that has no team, and the upstream
// would trust it. (Istio builds its own filter chain, so this cannot be left
// to proxy configuration.)
func (a *Authorizer) Unset(d *Decision) []string {
	set := a.Identity(d)
	var out []string
	for _, name := range []string{idKeyHash, idKeyAlias, idUserID, idTeamID, idModel} {
		full, found := a.prefix+name, false
		for _, kv := range set {
			found = found || kv[0] == full
		}
		if !found {
			out = append(out, full)
		}
	}
	return out
}

// Decide runs the checks in LiteLLM's order.
func (a *Authorizer) Decide(ctx context.Context, r *Request) Decision {
	start := time.Now()
	d := a.decide(ctx, r)
	a.decisions[d.Reason].Inc()
	took := time.Since(start)
	a.latency.Observe(took.Seconds())
	if a.dlog != nil {
		a.logDecision(ctx, r, &d, took)
	}
	return d
}

func (a *Authorizer) decide(ctx context.Context, r *Request) Decision {
	if ctx.Err() != nil {
		return unavailable("Authorization deadline passed")
	}
	cred := a.credential(r)
	if cred.malformed {
		return deny(ReasonMalformed, errMalformed)
	}
	if cred.key == "" {
		return deny(ReasonNoCredential, errNoKey)
	}
	var remove, removeQ []string
	if cred.fromQuery {
		removeQ = removeQueryKey
	} else if l, ok := removeLists[cred.from]; ok {
		remove = l
	} else {
		remove = []string{cred.from}
	}
	hash := sha256.Sum256([]byte(cred.key))
	if subtle.ConstantTimeCompare(hash[:], a.master[:]) == 1 {
		m := a.requestModels(r)
		return Decision{Allowed: true, Reason: ReasonMasterKey, Model: m.primary, RemoveHeaders: remove, RemoveQuery: removeQ}
	}
	if !strings.HasPrefix(cred.key, keys.Prefix) {
		return deny(ReasonNotVirtualKey, apierr.New(http.StatusUnauthorized, apierr.TypeAuth, "None",
			"LiteLLM Virtual Key expected. Received="+first(cred.key, 4)+"****"+last(cred.key, 4)+", expected to start with 'sk-'."))
	}
	e, err := a.cache.Get(ctx, hash)
	if err != nil {
		if ctx.Err() != nil {
			return unavailable("Authorization deadline passed")
		}
		return unavailable("Key store unavailable")
	}
	now := a.now()
	if e == nil || (!e.GraceUntil.IsZero() && !now.Before(e.GraceUntil)) {
		return deny(ReasonUnknownKey, errUnknown(cred.key, hash))
	}
	if e.Blocked {
		return deny(ReasonBlocked, errBlocked)
	}
	m := a.requestModels(r)
	for _, name := range m.names {
		if !keys.ModelAllowed(e.Key.Models, e.Key.Aliases, a.groups, name) {
			return deny(ReasonModelDenied, apierr.New(http.StatusUnauthorized, apierr.TypeKeyModelAccessDenied, "model",
				"key not allowed to access model. This key can only access models="+pyList(e.Key.Models)+". Tried to access "+name))
		}
	}
	var o org // the key's team, user and membership (org.go)
	if d, denied := a.orgAccess(ctx, e, &o, m.names, now); denied {
		return d
	}
	if !e.Expires.IsZero() && e.Expires.Before(now) {
		return deny(ReasonExpired, apierr.New(http.StatusUnauthorized, apierr.TypeExpiredKey, "sk-..."+last(e.Key.Token, 4),
			"Authentication Error - Expired Key. Key Expiry time "+pyTime(e.Expires)+" and current time "+pyTime(now)))
	}
	if e.HasBudget {
		spend := e.Spend()
		if e.BudgetResetDue(now) {
			spend = 0 // past its reset (keys.ResetDue): reset, even before the job has written it
		}
		if max := e.Budget(now); overBudget(spend, max) {
			return deny(ReasonBudget, apierr.New(http.StatusBadRequest, apierr.TypeBudgetExceeded, "",
				"Budget has been exceeded! Current cost: "+pyFloat(spend)+", Max budget: "+pyFloat(max)))
		}
	}
	if len(e.ModelBudgets) != 0 && a.modelBudgetExceeded(e, m.primary, now) {
		return deny(ReasonBudget, errModelBudget(e, m.primary))
	}
	if d, denied := a.orgBudgets(&o, now); denied {
		return d
	}
	return Decision{Allowed: true, Reason: ReasonAllowed, Entry: e, Model: m.primary, RemoveHeaders: remove, RemoveQuery: removeQ}
}

func deny(r Reason, e *apierr.Error) Decision { return Decision{Reason: r, Err: e} }

func unavailable(msg string) Decision {
	return Decision{Reason: ReasonUnavailable, Err: apierr.New(http.StatusServiceUnavailable, apierr.TypeInternal, "", msg)}
}

// Constant denials, rendered once.
var (
	errNoKey      = apierr.New(http.StatusUnauthorized, apierr.TypeAuth, "None", "Authentication Error, No api key passed in.")
	errMalformed  = apierr.New(http.StatusUnauthorized, apierr.TypeAuth, "None", "Authentication Error, Malformed API Key passed in. Ensure Key has `Bearer ` prefix.")
	errBlocked    = apierr.New(http.StatusUnauthorized, apierr.TypeAuth, "None", "Authentication Error, Key is blocked. Update via `/key/unblock` if you're an admin.")
	hexDigits     = "0123456789abcdef"
	pyTimeLayout  = "2006-01-02 15:04:05"
	pyMicroLayout = "2006-01-02 15:04:05.000000"
)

func errUnknown(key string, hash [32]byte) *apierr.Error {
	var h [64]byte
	for i, b := range hash {
		h[2*i], h[2*i+1] = hexDigits[b>>4], hexDigits[b&0xf]
	}
	return apierr.New(http.StatusUnauthorized, apierr.TypeTokenNotFound, "key",
		"Authentication Error, Invalid proxy server token passed. Received API Key = sk-..."+last(key, 4)+
			", Key Hash (Token) ="+string(h[:])+". Unable to find token in cache or `LiteLLM_VerificationTokenTable`")
}

func first(s string, n int) string { return s[:min(n, len(s))] }
func last(s string, n int) string  { return s[max(0, len(s)-n):] }

// pyList renders a list as Python's str(list) does: ['a', 'b'].
func pyList(l []string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, s := range l {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("'" + s + "'")
	}
	b.WriteByte(']')
	return b.String()
}

// pyFloat renders a float as Python's str(float) does for ordinary values:
// 10 -> "10.0", 0.5 -> "0.5".
func pyFloat(f float64) string {
	if a := math.Abs(f); a != 0 && (a >= 1e16 || a < 1e-4) && !math.IsInf(f, 0) {
		return strconv.FormatFloat(f, 'e', -1, 64) // 1e+16, 1.5e-05: as Python
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.ContainsAny(s, ".eEnN") {
		s += ".0"
	}
	return s
}

// pyTime renders a time as Python's str() of an aware UTC datetime:
// "2025-05-14 10:30:00+00:00", with ".123000" when it has a fraction.
func pyTime(t time.Time) string {
	t = t.UTC()
	if t.Nanosecond()/1000 != 0 {
		return t.Format(pyMicroLayout) + "+00:00"
	}
	return t.Format(pyTimeLayout) + "+00:00"
}
