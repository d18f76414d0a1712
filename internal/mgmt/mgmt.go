// Package mgmt is LiteLLM's key-management HTTP API (/key/generate,
// /key/update, /key/delete, /key/info, /v2/key/info, /key/list, /key/block,
// /key/unblock, /key/regenerate, /key/health) over a store.Store, LiteLLM's
// team and user API (/team/new, /team/update, /team/delete, /team/info,
// /team/list, /team/block, /team/unblock, /team/member_add,
// /team/member_update, /team/member_delete, /user/new, /user/update,
// /user/delete, /user/info, /user/list; teams.go, users.go) over a
// store.Org, plus the OpenAPI document that describes it (/openapi.json).
//
// Every error answers in LiteLLM's envelope (internal/apierr). The master key
// may call everything. With a Directory (users and teams), LiteLLM's roles
// and permissions apply to other callers (internal/access; roles.go);
// without one a virtual key may only read its own key (GET /key/info) and
// call POST /key/health. Every successful mutation appends an audit row and
// calls Config.Invalidate for each affected hash so this replica's cache drops
// the key at once; other replicas learn through the store's change feed.
//
// Differences from LiteLLM worth knowing (see docs/api.md):
//   - soft_budget has no column in the key table; it is kept in metadata,
//     like model_rpm_limit, model_tpm_limit, guardrails, tags,
//     enforced_params, temp_budget_increase and temp_budget_expiry.
//   - an explicit null for one of those metadata-bound fields in /key/update
//     removes it from metadata (LiteLLM ignores it).
//   - bad durations answer 400 naming the field (LiteLLM answers 500).
//   - a missing foreign-key row (budget_id, organization_id) answers 400
//     naming the field, and a store that is down or slower than
//     Config.RequestTimeout answers 503 no_db_connection (LiteLLM: 500).
//   - NaN or Infinity in spend/max_budget render as null.
package mgmt

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/virtualkeys/sidecar/internal/apierr"
	"github.com/virtualkeys/sidecar/internal/keygen"
	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
)

// DefaultMaxBodyBytes caps request bodies when Config.MaxBodyBytes is zero.
const DefaultMaxBodyBytes = 1 << 20

// DefaultChangedBy is the audit log's changed_by when neither the
// litellm-changed-by header nor the caller's user_id names anyone (LiteLLM's
// litellm_proxy_admin_name default).
const DefaultChangedBy = "default_user_id"

// Store is what the management API needs from a key store; store.Store
// satisfies it.
type Store interface {
	Create(ctx context.Context, k *keys.Key) error
	Get(ctx context.Context, hash string) (*keys.Key, error)
	GetByAlias(ctx context.Context, alias string) (*keys.Key, error)
	Lookup(ctx context.Context, hash string) (*keys.Key, error)
	Update(ctx context.Context, hash string, fn func(k *keys.Key) error) (*keys.Key, error)
	Delete(ctx context.Context, hashes []string) ([]*keys.Key, error)
	List(ctx context.Context, q store.ListQuery) (store.ListResult, error)
	SetBlocked(ctx context.Context, hash string, blocked bool) (*keys.Key, error)
	Regenerate(ctx context.Context, oldHash, newHash string, graceUntil *time.Time, fn func(k *keys.Key) error) (*keys.Key, error)
	AppendAudit(ctx context.Context, a *keys.Audit) error
}

var _ Store = store.Store(nil)

// Config configures the API.
type Config struct {
	// Store holds the keys. Required.
	Store Store
	// MasterKey is the proxy admin's key. Required (an API without one would
	// let nobody manage keys, or everybody).
	MasterKey string
	// Logger receives request errors and mutations (never a raw key).
	// nil discards.
	Logger *slog.Logger
	// Registerer receives the API's metrics. nil registers nothing.
	Registerer prometheus.Registerer
	// Invalidate is called synchronously after every successful mutation
	// with every affected hash, so this replica's cache drops the key at
	// once. nil does nothing.
	Invalidate func(hashes ...string)
	// Org holds teams, users and memberships for the /team/* and /user/*
	// routes. nil means Store, when it implements OrgStore; without one
	// those routes answer 501.
	Org OrgStore
	// OrgChanged is called synchronously after every team, user or
	// membership change with the event the change feed will also carry, so
	// this replica's caches drop the row at once. nil does nothing.
	OrgChanged func(store.Event)
	// MaxBodyBytes caps request bodies (413 beyond). 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Events receives a webhook event for every committed key mutation
	// (generate, update, regenerate, delete, block, unblock). nil sends none.
	Events EventSink
	// Now is the clock. nil means time.Now.
	Now func() time.Time
	// RequestTimeout bounds each request's store work (a context deadline
	// on every query it makes): a database that hangs answers 503 instead
	// of holding the request. 0 means DefaultRequestTimeout.
	RequestTimeout time.Duration
	// KeyGeneration holds LiteLLM's key-generation rules (config.yaml's
	// key_generation_settings, default_key_generate_params and
	// upperbound_key_generate_params), applied on /key/generate. nil
	// applies none.
	KeyGeneration *keygen.Settings
	// Teams finds a team key's team for those rules. nil means Directory's
	// teams, or, without a Directory, no team table: a team_id is a label
	// and the team-key rules are skipped.
	Teams TeamFinder
	// Directory reads callers' user rows and keys' team rows for LiteLLM's
	// roles and permissions (docs/api.md's matrix). nil: only the master
	// key manages keys; a virtual key reads its own key.
	Directory Directory
	// AccessGroups are the model access groups a models list may name (the
	// Check's): a team key's models are matched against its team's with
	// them. nil: none.
	AccessGroups keys.AccessGroups
}

// DefaultRequestTimeout is Config.RequestTimeout's zero value.
const DefaultRequestTimeout = 10 * time.Second

// API serves the management endpoints. Create it with New.
type API struct {
	st         Store
	org        OrgStore
	onOrg      func(store.Event)
	masterHash [32]byte
	log        *slog.Logger
	invalidate func(hashes ...string)
	events     EventSink
	maxBody    int64
	timeout    time.Duration
	now        func() time.Time
	keyGen     *keygen.Settings
	teams      TeamFinder
	dir        Directory
	groups     keys.AccessGroups
	mux        *http.ServeMux

	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// New validates cfg and builds the API.
func New(cfg Config) (*API, error) {
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, errors.New("mgmt: Store is required"))
	}
	if cfg.MasterKey == "" {
		errs = append(errs, errors.New("mgmt: MasterKey is required"))
	}
	if cfg.MaxBodyBytes < 0 {
		errs = append(errs, fmt.Errorf("mgmt: MaxBodyBytes %d is negative", cfg.MaxBodyBytes))
	}
	if cfg.RequestTimeout < 0 {
		errs = append(errs, fmt.Errorf("mgmt: RequestTimeout %s is negative", cfg.RequestTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	a := &API{
		st:         cfg.Store,
		masterHash: sha256.Sum256([]byte(cfg.MasterKey)),
		log:        cfg.Logger,
		invalidate: cfg.Invalidate,
		events:     cfg.Events,
		maxBody:    cfg.MaxBodyBytes,
		timeout:    cfg.RequestTimeout,
		now:        cfg.Now,
		keyGen:     cfg.KeyGeneration,
		teams:      cfg.Teams,
		dir:        cfg.Directory,
		groups:     cfg.AccessGroups,
	}
	if a.teams == nil && a.dir != nil {
		a.teams = a.dir.Team
	}
	if a.timeout == 0 {
		a.timeout = DefaultRequestTimeout
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.invalidate == nil {
		a.invalidate = func(...string) {}
	}
	a.org, a.onOrg = cfg.Org, cfg.OrgChanged
	if o, ok := cfg.Store.(OrgStore); ok && a.org == nil {
		a.org = o
	}
	if a.onOrg == nil {
		a.onOrg = func(store.Event) {}
	}
	if a.maxBody == 0 {
		a.maxBody = DefaultMaxBodyBytes
	}
	if a.now == nil {
		a.now = time.Now
	}
	a.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "sidecar",
		Subsystem: "mgmt",
		Name:      "requests_total",
		Help:      "Management API requests by route and HTTP status.",
	}, []string{"route", "code"})
	a.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "sidecar",
		Subsystem: "mgmt",
		Name:      "request_duration_seconds",
		Help:      "Management API request latency by route.",
		Buckets:   []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"route"})
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{a.requests, a.latency} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("mgmt: register metrics: %w", err)
			}
		}
	}
	a.mux = http.NewServeMux()
	for _, rt := range a.routes() {
		a.mux.Handle(rt.path, a.serve(rt))
	}
	a.mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := apierr.New(http.StatusNotFound, apierr.TypeNotFound, "", "Route not found: "+r.Method+" "+r.URL.Path)
		a.requests.WithLabelValues("unknown", strconv.Itoa(e.Status)).Inc()
		e.Write(w)
		a.logRequest(r, e.Status, 0, nil)
	}))
	return a, nil
}

// Handler returns the HTTP handler serving every management route.
func (a *API) Handler() http.Handler { return a.mux }

// access says who may call a route.
type access uint8

const (
	adminOnly   access = iota
	virtualOK          // a virtual key may call it too (the handler checks ownership)
	selfManaged        // with a Directory, a team admin may call it for its team (the handler checks)
	public             // no credential needed
)

// handlerFunc answers one request: a value to encode as JSON with status 200,
// or an error (an *apierr.Error, a keys sentinel, or anything else = 500).
type handlerFunc func(r *http.Request, c *caller) (any, error)

type route struct {
	path   string // ServeMux pattern without method
	method string
	access access
	h      handlerFunc
}

func (a *API) routes() []route {
	return []route{
		{"/key/generate", http.MethodPost, adminOnly, a.generate},
		{"/key/update", http.MethodPost, adminOnly, a.update},
		{"/key/delete", http.MethodPost, adminOnly, a.delete},
		{"/key/info", http.MethodGet, virtualOK, a.info},
		{"/v2/key/info", http.MethodPost, adminOnly, a.infoV2},
		{"/key/list", http.MethodGet, adminOnly, a.list},
		{"/key/block", http.MethodPost, adminOnly, a.block},
		{"/key/unblock", http.MethodPost, adminOnly, a.unblock},
		{"/key/regenerate", http.MethodPost, adminOnly, a.regenerate},
		{"/key/{key}/regenerate", http.MethodPost, adminOnly, a.regenerate},
		{"/key/health", http.MethodPost, virtualOK, a.health},
		{"/spend/logs", http.MethodGet, adminOnly, a.spendLogs},
		{"/team/new", http.MethodPost, adminOnly, a.teamNew},
		{"/team/update", http.MethodPost, adminOnly, a.teamUpdate},
		{"/team/delete", http.MethodPost, adminOnly, a.teamDelete},
		{"/team/info", http.MethodGet, selfManaged, a.teamInfo},
		{"/team/list", http.MethodGet, selfManaged, a.teamList},
		{"/team/block", http.MethodPost, adminOnly, a.teamBlock},
		{"/team/unblock", http.MethodPost, adminOnly, a.teamUnblock},
		{"/team/member_add", http.MethodPost, selfManaged, a.teamMemberAdd},
		{"/team/member_delete", http.MethodPost, selfManaged, a.teamMemberDelete},
		{"/team/member_update", http.MethodPost, selfManaged, a.teamMemberUpdate},
		{"/team/permissions_list", http.MethodGet, selfManaged, a.teamPermissionsList},
		{"/team/permissions_update", http.MethodPost, selfManaged, a.teamPermissionsUpdate},
		{"/user/new", http.MethodPost, adminOnly, a.userNew},
		{"/user/update", http.MethodPost, adminOnly, a.userUpdate},
		{"/user/delete", http.MethodPost, adminOnly, a.userDelete},
		{"/user/info", http.MethodGet, selfManaged, a.userInfo},
		{"/user/list", http.MethodGet, adminOnly, a.userList},
		{"/openapi.json", http.MethodGet, public, a.openapi},
	}
}

// serve wraps a route: method check, body cap, auth, the handler, the
// response or error envelope, metrics.
func (a *API) serve(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		var c *caller
		status := a.serveRoute(w, r, rt, &c)
		took := time.Since(start)
		a.requests.WithLabelValues(rt.path, strconv.Itoa(status)).Inc()
		a.latency.WithLabelValues(rt.path).Observe(took.Seconds())
		a.logRequest(r, status, took, c)
	})
}

// logRequest writes one info line per management request (warn for a 5xx):
// who called (admin or the caller key's hash prefix; never a raw key), what,
// and the answer. A rejected credential shows as caller "unauthenticated".
func (a *API) logRequest(r *http.Request, status int, took time.Duration, c *caller) {
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelWarn
	}
	if !a.log.Enabled(r.Context(), level) {
		return
	}
	who := "unauthenticated"
	switch {
	case c != nil && c.admin && c.key == nil:
		who = "master_key"
	case c != nil:
		who = keys.Redact(c.hash)
	}
	a.log.LogAttrs(r.Context(), level, "management request",
		slog.String("method", r.Method), slog.String("path", redactPath(r)), slog.Int("status", status),
		slog.Duration("duration", took), slog.String("caller", who), slog.String("remote", r.RemoteAddr))
}

func (a *API) serveRoute(w http.ResponseWriter, r *http.Request, rt route, cp **caller) (status int) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			status = a.writeErr(w, r, fmt.Errorf("panic: %v", p))
		}
	}()
	if r.Method != rt.method {
		w.Header().Set("Allow", rt.method)
		return a.writeErr(w, r, apierr.New(http.StatusMethodNotAllowed, apierr.TypeBadRequest, "",
			"Method Not Allowed: "+r.Method+" "+redactPath(r)+" accepts "+rt.method))
	}
	r.Body = http.MaxBytesReader(w, r.Body, a.maxBody)
	if e := checkURL(r); e != nil {
		return a.writeErr(w, r, e)
	}
	var c *caller
	if rt.access != public {
		var err error
		actx, cancel := context.WithTimeout(r.Context(), a.timeout) // a virtual key is looked up in the store
		c, err = a.authenticate(r.WithContext(actx))
		cancel()
		if err != nil {
			return a.writeErr(w, r, err)
		}
		*cp = c
		if err := a.resolveRole(r.Context(), c); err != nil {
			return a.writeErr(w, r, err)
		}
		if err := a.routeCheck(r, rt, c); err != nil {
			return a.writeErr(w, r, err)
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.timeout)
	defer cancel()
	v, err := rt.h(r.WithContext(ctx), c)
	if err != nil {
		return a.writeErr(w, r, err)
	}
	if b, ok := v.(rawJSON); ok {
		return writeBytes(w, http.StatusOK, b)
	}
	b, err := marshal(v)
	if err != nil {
		return a.writeErr(w, r, fmt.Errorf("encode response: %w", err))
	}
	return writeBytes(w, http.StatusOK, b)
}

// rawJSON is a response already encoded.
type rawJSON []byte

func writeBytes(w http.ResponseWriter, status int, b []byte) int {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
	return status
}

// writeErr maps err to the envelope and writes it. Store failures are logged
// with detail and answered with a generic 500.
func (a *API) writeErr(w http.ResponseWriter, r *http.Request, err error) int {
	e := a.toAPIErr(r, err)
	if e.Status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	e.Write(w)
	return e.Status
}

func (a *API) toAPIErr(r *http.Request, err error) *apierr.Error {
	var ae *apierr.Error
	var ce *keys.ConflictError
	var mbe *http.MaxBytesError
	var re *keys.ReferenceError
	var ie *keys.InvalidError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &mbe):
		return apierr.New(http.StatusRequestEntityTooLarge, apierr.TypeRequestTooLarge, "",
			fmt.Sprintf("Request body too large: the limit is %d bytes", mbe.Limit))
	case errors.As(err, &ce):
		return conflictErr(ce)
	case errors.Is(err, keys.ErrNotFound):
		return errKeyNotFound()
	case errors.As(err, &re):
		return errReference(re)
	case errors.As(err, &ie):
		return apierr.New(http.StatusBadRequest, apierr.TypeBadRequest, ie.Field, "Invalid value: "+ie.Error())
	case errors.Is(err, keys.ErrInvalid):
		return apierr.New(http.StatusBadRequest, apierr.TypeBadRequest, "", "Invalid value: the database refused it")
	case errors.Is(err, keys.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		a.log.WarnContext(r.Context(), "management request: key database unavailable",
			slog.String("method", r.Method), slog.String("path", redactPath(r)), slog.Any("error", err))
		return errUnavailable
	}
	a.log.ErrorContext(r.Context(), "management request failed",
		slog.String("method", r.Method), slog.String("path", redactPath(r)), slog.Any("error", err))
	return apierr.New(http.StatusInternalServerError, apierr.TypeInternal, "", "Internal server error")
}

// redactPath renders the request path without a raw key in it: any
// segment that looks like one (/key/{key}/regenerate carries one, and so
// may a mistyped path) is replaced by its redacted form.
func redactPath(r *http.Request) string {
	p := r.URL.Path
	if !strings.Contains(p, keys.Prefix) {
		return p
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		if strings.HasPrefix(s, keys.Prefix) {
			segs[i] = keys.Redact(s)
		}
	}
	return strings.Join(segs, "/")
}

func conflictErr(ce *keys.ConflictError) *apierr.Error {
	if ce.Field == "key_alias" {
		return errAliasExists(ce.Value)
	}
	return apierr.New(http.StatusBadRequest, apierr.TypeBadRequest, "key", "Key already exists")
}

func errAliasExists(alias string) *apierr.Error {
	return apierr.New(http.StatusBadRequest, apierr.TypeBadRequest, "key_alias",
		"Key with alias '"+alias+"' already exists. Unique key aliases across all keys are required.")
}

// errUnavailable answers a store that is down, unreachable or too slow
// (LiteLLM's no_db_connection type).
var errUnavailable = apierr.New(http.StatusServiceUnavailable, apierr.TypeNoDBConnection, "",
	"DB not connected: the key database is unreachable or did not answer within the request timeout. Retry later.")

// errReference names the field whose value refers to a row that does not
// exist (a foreign key on LiteLLM's tables: budget_id, organization_id).
func errReference(re *keys.ReferenceError) *apierr.Error {
	msg := "Invalid " + re.Field + ": '" + re.Value + "' does not exist"
	if re.Table != "" {
		msg += " in " + re.Table
	}
	if re.Value == "" && re.Table == "" {
		msg = "Invalid " + re.Field + ": it refers to a row that does not exist"
	}
	return apierr.New(http.StatusBadRequest, apierr.TypeBadRequest, re.Field, msg)
}

func errKeyNotFound() *apierr.Error {
	return apierr.New(http.StatusNotFound, apierr.TypeNotFound, "key", "Key not found in database")
}

func errAdminOnly(route string) *apierr.Error {
	return apierr.New(http.StatusUnauthorized, apierr.TypeAuth, "None",
		"Authentication Error, only the proxy admin (master key) may call "+route+".")
}

func badRequest(param, msg string) *apierr.Error {
	return apierr.New(http.StatusBadRequest, apierr.TypeBadRequest, param, msg)
}

func invalid(param, msg string) *apierr.Error {
	return apierr.New(http.StatusUnprocessableEntity, apierr.TypeValidation, param, msg)
}

// checkURL refuses a path or query that no store can take as text: invalid
// UTF-8 or NUL characters (Postgres rejects both).
func checkURL(r *http.Request) *apierr.Error {
	if !cleanText(r.URL.Path) {
		return invalid("path", "path: must be valid UTF-8 without NUL characters")
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return invalid("query", "query: malformed query string")
	}
	for k, vs := range q {
		for _, v := range vs {
			if !cleanText(k) || !cleanText(v) {
				return invalid("query", "query: must be valid UTF-8 without NUL characters")
			}
		}
	}
	return nil
}

func cleanText(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }
