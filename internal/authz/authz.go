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
// team-member budgets; rate limits (last, as LiteLLM: they count only
// requests that would otherwise pass). On allow every credential header is
// removed, so no virtual key reaches the provider, and the key's
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
//   - Every place a provider or router reads a model from must name an
//     allowed model, all of them (model.go, scanner.go): the body's top-level
//     "model" under every spelling a parser binds (JSON escapes decoded;
//     Unicode case folding, as Go's encoding/json binds struct fields) and
//     every occurrence (parsers keep the last), "target_model_names",
//     "fallbacks", multipart "model" fields, the Azure/OpenAI-engines/Gemini/
//     Vertex/Bedrock path segments (percent-decoded), ?model= and the model
//     header. A non-string "model" is denied, as LiteLLM does.
//   - A key with a model restriction is denied when the model cannot be
//     known: a body cut before its end (x-envoy-auth-partial-body, a body
//     shorter than Content-Length, JSON that never closes) even if an
//     allowed model came before the cut (a repeated "model" could follow
//     it); a body that is not one JSON object; an unreadable multipart
//     body; "." or ".." path segments or an encoded '/' or '\' in a model
//     segment; a POST to a route whose model travels in the body that names
//     none (the HTTP mode behind nginx or Caddy gets no body). Each message
//     says what to change. Keys allowed every model are unaffected.
//   - A key's aliases and the router's model_group_alias
//     (Config.ModelGroupAlias) grant access to the alias name only with
//     Config.ResolveAliases: without something downstream that resolves
//     them, the provider serves the name asked for.
//   - On allow every credential header the request carried is removed, and
//     ?key= when present, not only the one the key was read from; a
//     percent-encoded "key" parameter (which removal by name would miss) is
//     denied.
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
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/virtualkeys/sidecar/internal/apierr"
	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/ratelimit"
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
	// ModelHeader, when set, names a header that carries a model; like
	// every other carrier, its value must be allowed.
	ModelHeader string
	// ResolveAliases lets a key's aliases grant access to the alias name
	// (an alias is allowed when its target is). Set it only when something
	// downstream resolves aliases (a LiteLLM proxy or router): otherwise the
	// provider serves the requested name itself. false (the default) means
	// the requested name itself must be allowed.
	ResolveAliases bool
	// ModelGroupAlias is LiteLLM's router_settings.model_group_alias (alias
	// -> model group). With ResolveAliases, a requested model that is an
	// alias is allowed when the alias name or its target is, for the key's,
	// team's, team member's and user's model lists alike (LiteLLM's
	// _can_object_call_model); denials still name the alias. Without
	// ResolveAliases it is ignored: a provider that does not resolve the
	// alias serves the name asked for, which may be anything, so the alias
	// must not widen access. Nil means none.
	ModelGroupAlias map[string]string
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
	// RateLimiter enforces rpm/tpm/parallel limits. nil enforces none.
	RateLimiter RateLimiter
	// SubjectLimits returns the rate limits of a key's user, team and team
	// membership (teams and users live outside the key row). nil = the
	// key's own limits only.
	SubjectLimits func(e *cache.Entry) ratelimit.SubjectLimits
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
	ReasonRateLimited
	ReasonUnavailable
	numReasons
)

var reasonNames = [numReasons]string{"allowed", "master_key", "no_credential", "malformed_credential", "not_virtual_key", "unknown_key", "blocked", "model_not_allowed", "expired", "budget_exceeded", "rate_limited", "unavailable"}

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
	// RemoveHeaders and RemoveQuery name every credential the request
	// carried (all are removed on allow, not only the one used).
	RemoveHeaders []string
	RemoveQuery   []string
	// RateLimit is the rate-limit outcome for a key with limits (nil for
	// one without): the x-ratelimit-* values, the lease, or the denial.
	RateLimit *ratelimit.Result
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
	aliases     bool              // Config.ResolveAliases
	groupAlias  map[string]string // Config.ModelGroupAlias; nil without ResolveAliases
	removes     *removeTable
	prefix      string
	now         func() time.Time
	log         *slog.Logger
	dlog        *slog.Logger
	dlogSample  float64
	rl          RateLimiter
	subjects    func(e *cache.Entry) ratelimit.SubjectLimits
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
	for alias, target := range cfg.ModelGroupAlias {
		if alias == "" || target == "" {
			errs = append(errs, fmt.Errorf("authz: model group alias %q -> %q: both names are required", alias, target))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	a := &Authorizer{
		cache: cfg.Cache, org: cfg.Org, master: sha256.Sum256([]byte(cfg.MasterKey)), groups: cfg.AccessGroups,
		keyHeader: strings.ToLower(cfg.KeyHeader), modelHeader: strings.ToLower(cfg.ModelHeader),
		prefix: strings.ToLower(cfg.IdentityHeaderPrefix), now: cfg.Now, log: cfg.Logger,
		dlog: cfg.DecisionLog.Logger, dlogSample: cfg.DecisionLog.AllowSample,
		rl: cfg.RateLimiter, subjects: cfg.SubjectLimits,
		aliases: cfg.ResolveAliases, modelSpend: cfg.ModelSpend,
	}
	if a.modelSpend == nil {
		a.modelSpend = noModelSpend{}
	}
	if cfg.ResolveAliases && len(cfg.ModelGroupAlias) > 0 {
		a.groupAlias = maps.Clone(cfg.ModelGroupAlias)
	}
	a.removes = newRemoveTable(a.keyHeader)
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
	remove, removeQ, qerr := a.credentialsCarried(r)
	if qerr != nil {
		return deny(ReasonMalformed, qerr)
	}
	hash := sha256.Sum256([]byte(cred.key))
	if subtle.ConstantTimeCompare(hash[:], a.master[:]) == 1 {
		var m models
		a.requestModels(r, &m)
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
	var m models // on the stack
	if merr := a.checkModels(r, e, &m); merr != nil {
		return deny(ReasonModelDenied, merr)
	}
	var o org // the key's team, user and membership (org.go)
	if d, denied := a.orgAccess(ctx, e, &o, &m, now); denied {
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
				"Budget has been exceeded! Current cost: "+apierr.PyFloat(spend)+", Max budget: "+apierr.PyFloat(max)))
		}
	}
	if len(e.ModelBudgets) != 0 && a.modelBudgetExceeded(e, m.primary, now) {
		return deny(ReasonBudget, errModelBudget(e, m.primary))
	}
	if d, denied := a.orgBudgets(&o, now); denied {
		return d
	}
	return a.rateLimit(ctx, Decision{Allowed: true, Reason: ReasonAllowed, Entry: e, Model: m.primary, RemoveHeaders: remove, RemoveQuery: removeQ})
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

// pyTime renders a time as Python's str() of an aware UTC datetime:
// "2025-05-14 10:30:00+00:00", with ".123000" when it has a fraction.
func pyTime(t time.Time) string {
	t = t.UTC()
	if t.Nanosecond()/1000 != 0 {
		return t.Format(pyMicroLayout) + "+00:00"
	}
	return t.Format(pyTimeLayout) + "+00:00"
}
