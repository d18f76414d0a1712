// Package httpauthz serves the sidecar's decisions over plain HTTP, for
// proxies that call an HTTP authorization endpoint instead of Envoy's gRPC
// ext_authz: Envoy's http_service, nginx auth_request, and Caddy/Traefik
// forward_auth. It gives the same decisions as the gRPC Check because it
// asks the same decision core.
//
// Where the original request is:
//   - Envoy http_service calls with the original method, the prefix plus the
//     original path and query, and (with with_request_body) the body.
//   - nginx auth_request and forward_auth call the prefix itself; the
//     original method and URI come in X-Original-Method / X-Original-URI
//     (nginx) or X-Forwarded-Method / X-Forwarded-Uri (Caddy, Traefik), read
//     only when TrustForwarded is set: anyone who can reach the endpoint
//     could otherwise choose the path the model is read from.
//
// The proxies can remove headers but not query parameters, so a request
// carrying ?key= is denied (400) even when the key is valid: allowing it
// would send the virtual key to the provider. nginx auth_request and
// forward_auth send no body, so a route whose model is in the body (POST
// /v1/chat/completions) is denied for a key with a model restriction unless
// the path or the model header names the model (see package authz).
//
// Answers: allow = 200 with the identity headers,
// x-envoy-auth-headers-to-remove naming every credential header the request
// carried and, for
// a key with rate limits, the x-ratelimit-* headers; deny = the LiteLLM
// status (401, 400, 429) with the JSON error, content-type
// application/json, x-litellm-deny-reason: <error type> and, for a rate
// limit, retry-after, rate_limit_type and reset_at. nginx turns any
// auth_request status but 401 and 403 into a 500 and drops the body, so a
// caller that sends X-Authz-Client: nginx gets 401 or 403 instead, with the
// real status in x-litellm-deny-status and the JSON error in
// x-litellm-error for the nginx config to hand back (deploy/nginx).
// Rate limits: rpm holds in HTTP mode; a max_parallel_requests lease is
// given back as soon as the answer is sent (Config.Releaser), because no
// proxy here reports the response's end, and tpm counts only tokens some
// metering server reports.
// A decision is never a 5xx; a store outage on an unknown key is (503),
// which the proxies treat as an authorization error and fail closed.
package httpauthz

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/virtualkeys/sidecar/internal/apierr"
	"github.com/virtualkeys/sidecar/internal/authz"
	"github.com/virtualkeys/sidecar/internal/ratelimit"
)

// Decider is the decision core; *authz.Authorizer satisfies it.
type Decider interface {
	Decide(ctx context.Context, r *authz.Request) authz.Decision
	Identity(d *authz.Decision) [][2]string
	Unset(d *authz.Decision) []string
}

// Releaser gives back a rate-limit lease; *ratelimit.Limiter satisfies it.
type Releaser interface {
	Release(ctx context.Context, s ratelimit.Subject)
}

// DefaultPrefix is where the endpoint is mounted when Config.Prefix is empty.
const DefaultPrefix = "/authz"

// DefaultMaxBodyBytes caps the request body read when Config.MaxBodyBytes is zero.
const DefaultMaxBodyBytes = 64 << 10

// Response headers.
const (
	HeaderDenyReason    = "X-Litellm-Deny-Reason"
	HeaderDenyStatus    = "X-Litellm-Deny-Status"
	HeaderError         = "X-Litellm-Error"
	HeaderHeadersRemove = "X-Envoy-Auth-Headers-To-Remove"
	HeaderClient        = "X-Authz-Client"
	clientNginx         = "nginx"
	headerOrigMethod    = "X-Original-Method"
	headerOrigURI       = "X-Original-Uri"
	headerForwardMethod = "X-Forwarded-Method"
	headerForwardURI    = "X-Forwarded-Uri"
	contentTypeJSON     = "application/json"
)

// Config configures the handler.
type Config struct {
	// Decider makes the decisions. Required.
	Decider Decider
	// Prefix is the path the handler is mounted at. "" means DefaultPrefix.
	Prefix string
	// TrustForwarded reads the original method and URI from
	// X-Original-* / X-Forwarded-* headers. Enable it only when the only
	// callers are the local proxy.
	TrustForwarded bool
	// MaxBodyBytes caps the body read for the model; a longer body is read
	// up to the cap, as Envoy's allow_partial_message would send it. 0 means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Logger receives errors (never a raw key). nil discards.
	Logger *slog.Logger
	// Registerer receives the handler's metrics. nil registers nothing.
	Registerer prometheus.Registerer
	// Releaser gives back the max_parallel_requests lease of an allowed
	// request at once: no proxy in HTTP mode reports when the response
	// ends, so a slot held until then would only be freed by the lease
	// timeout. nil keeps the lease.
	Releaser Releaser
}

// Handler is the HTTP authz endpoint. Create it with New.
type Handler struct {
	d       Decider
	rel     Releaser
	prefix  string
	trust   bool
	maxBody int64
	log     *slog.Logger
	answers *prometheus.CounterVec
}

// New validates cfg and builds the handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Decider == nil {
		return nil, errors.New("httpauthz: Decider is required")
	}
	h := &Handler{d: cfg.Decider, rel: cfg.Releaser, prefix: cfg.Prefix, trust: cfg.TrustForwarded, maxBody: cfg.MaxBodyBytes, log: cfg.Logger}
	if h.prefix == "" {
		h.prefix = DefaultPrefix
	}
	if !strings.HasPrefix(h.prefix, "/") || strings.HasSuffix(h.prefix, "/") {
		return nil, errors.New("httpauthz: Prefix must start with / and not end with /")
	}
	if h.maxBody <= 0 {
		h.maxBody = DefaultMaxBodyBytes
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.answers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidecar_httpauthz_responses_total", Help: "HTTP authz answers by status code.",
	}, []string{"code"})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(h.answers); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// Prefix is the path the handler expects to be mounted at (with and
// without a trailing slash).
func (h *Handler) Prefix() string { return h.prefix }

// ServeHTTP answers one authorization request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	method, path, ok := h.original(r)
	if !ok {
		h.deny(w, r, apierr.New(http.StatusBadRequest, apierr.TypeBadRequest, "", "httpauthz: the original URI is not a valid request target"))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, h.maxBody+1))
	if err != nil {
		body = nil // a broken body cannot name a model; decide without it
	}
	truncated := int64(len(body)) > h.maxBody
	if truncated {
		body = body[:h.maxBody]
	}
	req := &authz.Request{Method: method, Path: path, Header: func(name string) string { return r.Header.Get(name) }, Body: body, Truncated: truncated}
	d := h.d.Decide(r.Context(), req)
	if d.Allowed && len(d.RemoveQuery) > 0 {
		// The proxies that call this endpoint can remove headers, not
		// query parameters: allowing would send the virtual key upstream.
		d = authz.Decision{Reason: authz.ReasonMalformed, Err: errQueryKey}
	}
	if !d.Allowed {
		e := d.Err
		if e == nil {
			e = apierr.New(http.StatusServiceUnavailable, apierr.TypeInternal, "", "authorization failed")
		}
		for _, kv := range authz.RateLimitHeaders(&d) { // retry-after, rate_limit_type, reset_at
			w.Header().Set(kv[0], kv[1])
		}
		h.deny(w, r, e)
		return
	}
	hd := w.Header()
	for _, kv := range h.d.Identity(&d) {
		hd.Set(kv[0], kv[1])
	}
	for _, kv := range authz.RateLimitHeaders(&d) { // x-ratelimit-*, for keys with limits
		hd.Set(kv[0], kv[1])
	}
	// The credential, and any identity header this key does not set (a
	// client must not supply its own).
	if remove := append(slices.Clip(d.RemoveHeaders), h.d.Unset(&d)...); len(remove) > 0 {
		hd.Set(HeaderHeadersRemove, strings.Join(remove, ","))
	}
	w.WriteHeader(http.StatusOK)
	h.answers.WithLabelValues("200").Inc()
	if h.rel != nil && d.RateLimit != nil && d.Entry != nil {
		if lease := d.RateLimit.Lease(); lease != "" {
			h.rel.Release(r.Context(), ratelimit.Subject{KeyHash: d.Entry.Key.Token, Lease: lease})
		}
	}
}

// errQueryKey denies a request carrying ?key=, which the HTTP mode's
// proxies cannot strip before forwarding.
var errQueryKey = apierr.New(http.StatusBadRequest, apierr.TypeBadRequest, "key",
	"The request carries a key in the URL query (?key=), which this proxy cannot remove before forwarding, so it would reach the provider. "+
		"Send the key in a header instead (x-goog-api-key or Authorization: Bearer).")

// original recovers the original method and path-with-query.
func (h *Handler) original(r *http.Request) (method, path string, ok bool) {
	method, path = r.Method, strings.TrimPrefix(r.URL.RequestURI(), h.prefix)
	if path == "" || path[0] != '/' {
		path = "/" + path
	}
	if h.trust {
		for _, pair := range [][2]string{{headerOrigMethod, headerOrigURI}, {headerForwardMethod, headerForwardURI}} {
			if u := r.Header.Get(pair[1]); u != "" {
				if _, err := url.ParseRequestURI(u); err != nil {
					return "", "", false
				}
				path = u
				if m := r.Header.Get(pair[0]); m != "" {
					method = m
				}
				break
			}
		}
	}
	return method, path, true
}

func (h *Handler) deny(w http.ResponseWriter, r *http.Request, e *apierr.Error) {
	status := e.Status
	hd := w.Header()
	hd.Set(HeaderDenyReason, e.Type)
	body := e.JSON()
	if strings.EqualFold(r.Header.Get(HeaderClient), clientNginx) && status < 500 {
		// nginx drops an auth_request body and turns any status but 401
		// and 403 into a 500: carry both in headers for its config to
		// restore (encoding/json escapes control characters, so the JSON
		// is a valid header value).
		hd.Set(HeaderDenyStatus, strconv.Itoa(status))
		hd.Set(HeaderError, string(body))
		if status != http.StatusUnauthorized {
			status = http.StatusForbidden
		}
	}
	hd.Set("Content-Type", contentTypeJSON)
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
	h.answers.WithLabelValues(strconv.Itoa(status)).Inc()
	if status >= 500 {
		h.log.Warn("authorization error", "status", status, "type", e.Type)
	}
}
