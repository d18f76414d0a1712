// Package extproc meters LLM responses as Envoy's external processor
// (envoy.service.ext_proc.v3.ExternalProcessor), on the sidecar's gRPC
// listener beside the Check.
//
// One gRPC stream is one HTTP request. The server learns whose request it
// is from the dynamic metadata the Check returned (namespace
// envoy.filters.http.ext_authz: key_hash, key_alias, user_id, team_id,
// model, rl_lease), which Envoy forwards when the filter lists the
// namespace in metadata_options.forwarding_namespaces.untyped, or failing
// that from the identity headers the Check set on the request (trustworthy:
// the Check overwrites or removes them). Header values are read from
// raw_value (current Envoy) or value (older Envoy).
//
// Processing mode (set in the Envoy filter; see docs/metering.md for the
// measurements behind it): request headers SEND; request body NONE, except
// for OpenAI chat/completions and completions requests, whose headers
// answer with a mode_override to BUFFERED_PARTIAL (the filter must set
// allow_mode_override) so that a stream that did not ask for usage gets
// "stream_options": {"include_usage": true} injected (a body mutation, as
// Envoy AI Gateway does). BUFFERED_PARTIAL rather than BUFFERED: a body
// larger than Envoy's buffer limit then arrives in parts and passes
// unchanged (charged by estimate if it was a stream) instead of Envoy
// answering 413; a body that fits arrives whole (end_of_stream) and is
// the only one mutated; response headers SEND; response body STREAMED
// (each chunk answered at once, never held); trailers SKIP. Every message
// Envoy waits for is answered with an empty CommonResponse (shared, never
// allocated per message). In observability_mode nothing is answered.
//
// Charging: a 2xx response is priced from the usage it carries (package
// usage) with the current price table (package pricing). A response
// without usage (a stream that did not get usage injected, a body cut
// short) is charged by an estimate, counted in
// sidecar_extproc_responses_total{outcome="estimated"}: prompt tokens =
// request body bytes / 4 (when the body was seen), output tokens = SSE
// data events for a stream, else response body bytes / 4. A model not in
// the table is counted (outcome="unpriced"), logged once per model, and
// charged UnknownModelCostPerToken per token (0 unless configured).
// Non-2xx responses cost nothing (logged with status "failure"). A client
// that goes away mid-response is charged for what was seen the same way.
//
// The rate limiter (Limiter) is told once per request: Finish with the
// tokens when the response completes, Release when the stream ends
// otherwise.
package extproc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/virtualkeys/sidecar/internal/pricing"
	"github.com/virtualkeys/sidecar/internal/spend"
	"github.com/virtualkeys/sidecar/internal/usage"
)

// AuthzNamespace is the dynamic-metadata namespace the Check's identity
// arrives in.
const AuthzNamespace = "envoy.filters.http.ext_authz"

// ServiceName is the gRPC service name (for health checks).
const ServiceName = "envoy.service.ext_proc.v3.ExternalProcessor"

// Accountant receives metered requests; *spend.Accountant satisfies it.
type Accountant interface {
	Record(r *spend.Record)
}

// Prices gives the current price table; *pricing.Source satisfies it.
type Prices interface {
	Table() *pricing.Table
}

// Subject names whose rate-limit counters a finished response updates.
// Its fields are those of ratelimit.Subject, in order, so one converts to
// the other.
type Subject struct {
	KeyHash string // token hash
	Model   string // requested model ("" if none)
	TeamID  string
	UserID  string
	Lease   string // parallel-request lease id from the Check ("" if none)
}

// Usage is the tokens a finished response reports to the limiter (the
// fields of ratelimit.Usage).
type Usage struct{ InputTokens, OutputTokens int64 }

// Limiter is the rate limiter's end-of-request side (package ratelimit;
// wire *ratelimit.Limiter through a two-method adapter converting Subject
// and Usage). Both calls must be non-blocking.
type Limiter interface {
	// Finish records a completed response's tokens and releases its lease.
	Finish(ctx context.Context, s Subject, u Usage)
	// Release releases the lease of a request that ended otherwise.
	Release(ctx context.Context, s Subject)
}

// Config configures a Server.
type Config struct {
	// Accountant receives each metered request. Required.
	Accountant Accountant
	// Prices prices usage. Required.
	Prices Prices
	// Limiter is told when requests end; nil = no rate limiter.
	Limiter Limiter
	// IdentityHeaderPrefix prefixes the identity headers the Check sets
	// ("" = "x-litellm-").
	IdentityHeaderPrefix string
	// UnknownModelCostPerToken is charged per prompt and output token of a
	// model the price table does not know. 0 charges nothing (counted and
	// logged all the same).
	UnknownModelCostPerToken float64
	// InjectIncludeUsage makes OpenAI chat/completions and completions
	// request headers ask Envoy for the request body (mode_override to
	// BUFFERED_PARTIAL) so a stream without stream_options.include_usage gets it
	// injected. The Envoy filter must set allow_mode_override. false never
	// touches requests: such streams are charged by estimate.
	InjectIncludeUsage bool
	// MaxBodyBytes bounds what a response's usage reader buffers (one SSE
	// event, one JSON body, a compressed body). 0 means usage.DefaultMaxBytes.
	MaxBodyBytes int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
	// Logger receives unknown models and protocol errors; nil discards.
	Logger *slog.Logger
}

// Server is the ext_proc service. Create it with New.
type Server struct {
	extprocv3.UnimplementedExternalProcessorServer
	acct     Accountant
	prices   Prices
	limiter  Limiter
	idHeader struct{ keyHash, keyAlias, userID, teamID, model string }
	unknown  float64
	inject   bool
	maxBody  int
	now      func() time.Time
	log      *slog.Logger

	pool         sync.Pool // *stream
	unknownSeen  sync.Map  // model -> struct{}: logged once
	unknownCount atomic.Int64

	streams                                                  prometheus.Counter
	metered, estimated, unpriced, failed, partial, anonymous prometheus.Counter
	injected                                                 prometheus.Counter
	protocolErrors                                           prometheus.Counter
	unknownModels                                            *prometheus.CounterVec
}

// maxUnknownModels bounds the per-model unknown-model log and metric.
const maxUnknownModels = 1000

// New validates cfg and builds the Server.
func New(cfg Config) (*Server, error) {
	if cfg.Accountant == nil || cfg.Prices == nil {
		return nil, errors.New("extproc: Accountant and Prices are required")
	}
	if cfg.UnknownModelCostPerToken < 0 || math.IsNaN(cfg.UnknownModelCostPerToken) || math.IsInf(cfg.UnknownModelCostPerToken, 0) {
		return nil, errors.New("extproc: UnknownModelCostPerToken must be a finite number >= 0")
	}
	if cfg.MaxBodyBytes < 0 {
		return nil, errors.New("extproc: MaxBodyBytes must not be negative")
	}
	s := &Server{acct: cfg.Accountant, prices: cfg.Prices, limiter: cfg.Limiter, unknown: cfg.UnknownModelCostPerToken,
		inject: cfg.InjectIncludeUsage, maxBody: cfg.MaxBodyBytes, now: cfg.Now, log: cfg.Logger}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	p := strings.ToLower(cfg.IdentityHeaderPrefix)
	if p == "" {
		p = "x-litellm-"
	}
	s.idHeader.keyHash, s.idHeader.keyAlias, s.idHeader.userID = p+"key-hash", p+"key-alias", p+"user-id"
	s.idHeader.teamID, s.idHeader.model = p+"team-id", p+"model"
	s.pool.New = func() any { return &stream{} }

	s.streams = prometheus.NewCounter(prometheus.CounterOpts{Name: "sidecar_extproc_streams_total", Help: "ext_proc streams (one per HTTP request)."})
	outcomes := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sidecar_extproc_responses_total",
		Help: "Responses seen by ext_proc, by outcome: metered (usage read), estimated (no usage: charged by estimate), unpriced (model not in the price table), failed (non-2xx, not charged), incomplete (stream ended before the response did), anonymous (no key identity: not charged)."},
		[]string{"outcome"})
	s.metered, s.estimated, s.unpriced = outcomes.WithLabelValues("metered"), outcomes.WithLabelValues("estimated"), outcomes.WithLabelValues("unpriced")
	s.failed, s.partial, s.anonymous = outcomes.WithLabelValues("failed"), outcomes.WithLabelValues("incomplete"), outcomes.WithLabelValues("anonymous")
	s.injected = prometheus.NewCounter(prometheus.CounterOpts{Name: "sidecar_extproc_include_usage_injected_total", Help: "Streaming requests given stream_options.include_usage."})
	s.protocolErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "sidecar_extproc_protocol_errors_total", Help: "ext_proc streams that ended with an error other than the peer going away."})
	s.unknownModels = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sidecar_extproc_unknown_model_total",
		Help: "Responses for models the price table does not know, by model (the first 1000 models; later ones as \"other\")."}, []string{"model"})
	if cfg.Registerer != nil {
		for _, m := range []prometheus.Collector{s.streams, outcomes, s.injected, s.protocolErrors, s.unknownModels} {
			if err := cfg.Registerer.Register(m); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// Register registers the service on g.
func (s *Server) Register(g *grpc.Server) { extprocv3.RegisterExternalProcessorServer(g, s) }

// Shared answers: protobuf messages are safe to marshal concurrently.
var (
	respRequestHeaders   = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{}}}}
	respRequestBody      = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{}}}}
	respRequestTrailers  = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}}
	respResponseHeaders  = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{}}}}
	respResponseBody     = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{}}}}
	respResponseTrailers = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{}}}
	// respBufferBody answers OpenAI chat/completions request headers: send
	// the request body, buffered, so include_usage can be injected. The
	// override replaces the whole mode, so it restates the rest of it.
	respBufferBody = &extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{}}},
		ModeOverride: &filterv3.ProcessingMode{
			RequestHeaderMode: filterv3.ProcessingMode_SEND, RequestBodyMode: filterv3.ProcessingMode_BUFFERED_PARTIAL,
			ResponseHeaderMode: filterv3.ProcessingMode_SEND, ResponseBodyMode: filterv3.ProcessingMode_STREAMED,
			RequestTrailerMode: filterv3.ProcessingMode_SKIP, ResponseTrailerMode: filterv3.ProcessingMode_SKIP,
		},
	}
)

// stream is one request's state, pooled.
type stream struct {
	start                                               time.Time
	api                                                 usage.API
	method, path                                        string
	requestID, keyHash, keyAlias, userID, teamID, model string
	lease, endUser                                      string
	status                                              int
	contentType, contentEncoding                        string
	reqBodyBytes, respBytes, events                     int64
	sawRequestBody, sawResponse, sse, done              bool
	headerUsage                                         usage.Usage
	headerFound                                         bool
	x                                                   *usage.Extractor
}

func (st *stream) reset() {
	x := st.x
	*st = stream{x: x}
}

// Process serves one HTTP request's stream.
func (s *Server) Process(srv extprocv3.ExternalProcessor_ProcessServer) error {
	s.streams.Inc()
	st := s.pool.Get().(*stream)
	st.reset()
	st.start = s.now()
	defer func() {
		st.reset()
		s.pool.Put(st)
	}()
	ctx := srv.Context()
	for {
		req, err := srv.Recv()
		if err != nil {
			s.ended(ctx, st)
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled || ctx.Err() != nil {
				return nil
			}
			s.protocolErrors.Inc()
			return err
		}
		resp := s.handle(st, req)
		if resp == nil || req.GetObservabilityMode() {
			continue
		}
		if err := srv.Send(resp); err != nil {
			s.ended(ctx, st)
			if ctx.Err() != nil {
				return nil
			}
			s.protocolErrors.Inc()
			return err
		}
	}
}

// handle processes one message and returns the answer Envoy waits for.
func (s *Server) handle(st *stream, req *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	switch r := req.Request.(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		s.requestHeaders(st, req, r.RequestHeaders)
		if s.inject && st.method == "POST" && !r.RequestHeaders.GetEndOfStream() &&
			(st.api == usage.APIOpenAIChat || st.api == usage.APIOpenAICompletions) {
			return respBufferBody
		}
		return respRequestHeaders
	case *extprocv3.ProcessingRequest_RequestBody:
		return s.requestBody(st, r.RequestBody)
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return respRequestTrailers
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		s.responseHeaders(st, r.ResponseHeaders)
		if r.ResponseHeaders.GetEndOfStream() {
			s.finish(st)
		}
		return respResponseHeaders
	case *extprocv3.ProcessingRequest_ResponseBody:
		s.responseBody(st, r.ResponseBody)
		return respResponseBody
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		s.finish(st)
		return respResponseTrailers
	}
	return nil // unknown message: nothing Envoy waits for
}

// headerValue is a header's value: raw_value (current Envoy) or value.
func headerValue(h *corev3.HeaderValue) string {
	if len(h.RawValue) > 0 {
		return string(h.RawValue)
	}
	return h.Value
}

func (s *Server) requestHeaders(st *stream, req *extprocv3.ProcessingRequest, h *extprocv3.HttpHeaders) {
	for _, hv := range h.GetHeaders().GetHeaders() {
		switch k := hv.Key; k {
		case ":method":
			st.method = headerValue(hv)
		case ":path":
			st.path = headerValue(hv)
		case "x-request-id":
			st.requestID = headerValue(hv)
		case s.idHeader.keyHash:
			st.keyHash = headerValue(hv)
		case s.idHeader.keyAlias:
			st.keyAlias = headerValue(hv)
		case s.idHeader.userID:
			st.userID = headerValue(hv)
		case s.idHeader.teamID:
			st.teamID = headerValue(hv)
		case s.idHeader.model:
			st.model = headerValue(hv)
		}
	}
	// The Check's dynamic metadata, when forwarded, is the authority.
	if md := req.GetMetadataContext().GetFilterMetadata()[AuthzNamespace]; md != nil {
		f := md.GetFields()
		str := func(name string, into *string) {
			if v, ok := f[name]; ok {
				*into = v.GetStringValue()
			}
		}
		if _, ok := f["key_hash"]; ok { // identity from the Check: take all of it
			st.keyAlias, st.userID, st.teamID = "", "", ""
			str("key_hash", &st.keyHash)
			str("key_alias", &st.keyAlias)
			str("user_id", &st.userID)
			str("team_id", &st.teamID)
			if v, ok := f["model"]; ok {
				st.model = v.GetStringValue()
			}
		}
		str("rl_lease", &st.lease)
	}
	st.api = usage.Detect(st.method, st.path)
	if st.model == "" {
		st.model = usage.ModelFromPath(st.api, st.path)
	}
}

func (s *Server) requestBody(st *stream, b *extprocv3.HttpBody) *extprocv3.ProcessingResponse {
	st.sawRequestBody = true
	body := b.GetBody()
	st.reqBodyBytes += int64(len(body))
	if !b.GetEndOfStream() || !s.inject {
		return respRequestBody
	}
	out, changed := usage.InjectIncludeUsage(body)
	if !changed {
		return respRequestBody
	}
	s.injected.Inc()
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{
		Response: &extprocv3.CommonResponse{
			HeaderMutation: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{{
				Header:       &corev3.HeaderValue{Key: "content-length", RawValue: strconv.AppendInt(nil, int64(len(out)), 10)},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			}}},
			BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: out}},
		},
	}}}
}

func (s *Server) responseHeaders(st *stream, h *extprocv3.HttpHeaders) {
	st.sawResponse = true
	hs := h.GetHeaders().GetHeaders()
	for _, hv := range hs {
		switch hv.Key {
		case ":status":
			st.status, _ = strconv.Atoi(headerValue(hv))
		case "content-type":
			st.contentType = headerValue(hv)
		case "content-encoding":
			st.contentEncoding = headerValue(hv)
		}
	}
	if st.api == usage.APIBedrockConverse || st.api == usage.APIBedrockInvoke {
		st.headerUsage, st.headerFound = usage.BedrockHeaderUsage(func(name string) string {
			for _, hv := range hs {
				if hv.Key == name {
					return headerValue(hv)
				}
			}
			return ""
		})
	}
	st.sse = strings.Contains(st.contentType, "text/event-stream")
	if ok2xx(st.status) {
		if st.x == nil {
			st.x = usage.NewExtractor(st.api, st.contentType, st.contentEncoding, s.maxBody)
		} else {
			st.x.Reset(st.api, st.contentType, st.contentEncoding)
		}
	}
}

func (s *Server) responseBody(st *stream, b *extprocv3.HttpBody) {
	if st.done {
		return
	}
	body := b.GetBody()
	st.respBytes += int64(len(body))
	if ok2xx(st.status) && st.x != nil {
		_ = st.x.Write(body) // an error stops reading; the response is then estimated
	}
	if b.GetEndOfStream() {
		s.finish(st)
	}
}

func ok2xx(code int) bool { return code >= 200 && code < 300 }

// finish charges a response that completed.
func (s *Server) finish(st *stream) {
	if st.done {
		return
	}
	st.done = true
	u := s.charge(st, false)
	if s.limiter != nil {
		s.limiter.Finish(context.Background(), st.subject(), Usage{InputTokens: u.PromptTokens, OutputTokens: u.OutputTokens})
	}
}

// ended handles a stream that closed: a response not finished is charged
// for what was seen (if it had begun with a 2xx) and the lease released.
func (s *Server) ended(_ context.Context, st *stream) {
	if st.done {
		return
	}
	// A response that ended with trailers (SKIPped, so never seen) closes
	// the stream without end_of_stream: if its usage arrived, it completed.
	if st.sawResponse && ok2xx(st.status) && st.x != nil {
		if _, found := st.x.Usage(); found {
			s.finish(st)
			return
		}
	}
	st.done = true
	if st.sawResponse {
		s.charge(st, true)
	}
	if s.limiter != nil && (st.keyHash != "" || st.lease != "") {
		s.limiter.Release(context.Background(), st.subject())
	}
}

func (st *stream) subject() Subject {
	return Subject{KeyHash: st.keyHash, Model: st.model, TeamID: st.teamID, UserID: st.userID, Lease: st.lease}
}

// charge prices the response and records it; it returns the usage charged.
func (s *Server) charge(st *stream, incomplete bool) usage.Usage {
	end := s.now()
	rec := &spend.Record{
		RequestID: st.requestID, KeyHash: st.keyHash, KeyAlias: st.keyAlias, UserID: st.userID, TeamID: st.teamID,
		Model: st.model, CallType: callType(st.api), Provider: provider(st.api, st.path), HTTPStatus: st.status,
		Start: st.start, End: end,
	}
	if rec.RequestID == "" {
		rec.RequestID = "sidecar-" + strconv.FormatInt(st.start.UnixNano(), 36) + "-" + strconv.FormatUint(uint64(requestSeq.Add(1)), 36)
	}
	if !ok2xx(st.status) {
		rec.Status = "failure"
		s.failed.Inc()
		s.record(st, rec)
		return usage.Usage{}
	}
	rec.Status = "success"
	var u usage.Usage
	found := false
	if st.x != nil {
		u, found = st.x.Usage()
	}
	if !found && st.headerFound {
		m := u.Model
		u, found = st.headerUsage, true
		u.Model = m
	}
	if !found {
		rec.Estimated = true
		u.PromptTokens = (st.reqBodyBytes + 3) / 4
		if st.sse && st.x != nil {
			u.OutputTokens = int64(st.x.Events())
		} else {
			u.OutputTokens = (st.respBytes + 3) / 4
		}
	}
	table := s.prices.Table()
	cost, ok := table.Cost(st.model, u)
	if ok {
		if m, ok := table.Lookup(st.model, u.Model); ok && st.model == "" {
			rec.Model = m
		}
	} else {
		rec.Unpriced = true
		cost = float64(u.PromptTokens+u.OutputTokens) * s.unknown
		s.unknownModel(firstNonEmpty(u.Model, st.model))
	}
	if rec.Model == "" {
		rec.Model = u.Model
	}
	rec.Cost = cost
	rec.PromptTokens, rec.CompletionTokens = u.PromptTokens, u.OutputTokens
	switch {
	case incomplete:
		s.partial.Inc()
	case rec.Estimated:
		s.estimated.Inc()
	default:
		s.metered.Inc()
	}
	if rec.Unpriced {
		s.unpriced.Inc()
	}
	s.record(st, rec)
	return u
}

var requestSeq atomic.Uint32

func (s *Server) record(st *stream, rec *spend.Record) {
	if st.keyHash == "" {
		s.anonymous.Inc() // the master key or no Check: nothing to charge
		return
	}
	s.acct.Record(rec)
}

func (s *Server) unknownModel(model string) {
	if _, seen := s.unknownSeen.Load(model); seen {
		s.unknownModels.WithLabelValues(model).Inc()
		return
	}
	if s.unknownCount.Load() >= maxUnknownModels {
		s.unknownModels.WithLabelValues("other").Inc()
		return
	}
	if _, loaded := s.unknownSeen.LoadOrStore(model, struct{}{}); !loaded {
		s.unknownCount.Add(1)
		s.log.Warn("model not in the price table: charging the default price", "model", model, "cost_per_token", s.unknown)
	}
	s.unknownModels.WithLabelValues(model).Inc()
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// callType is LiteLLM's call_type for the API.
func callType(a usage.API) string {
	switch a {
	case usage.APIOpenAICompletions:
		return "atext_completion"
	case usage.APIOpenAIEmbeddings:
		return "aembedding"
	case usage.APIOpenAIResponses:
		return "aresponses"
	case usage.APIAnthropicMessages:
		return "anthropic_messages"
	case usage.APIGemini:
		return "agenerate_content"
	}
	return "acompletion"
}

// provider is LiteLLM's custom_llm_provider for the API and path.
func provider(a usage.API, path string) string {
	switch a {
	case usage.APIAnthropicMessages:
		if strings.Contains(path, ":rawPredict") || strings.Contains(path, ":streamRawPredict") {
			return "vertex_ai"
		}
		return "anthropic"
	case usage.APIGemini:
		if strings.Contains(path, "/projects/") {
			return "vertex_ai"
		}
		return "gemini"
	case usage.APIBedrockConverse, usage.APIBedrockInvoke:
		return "bedrock"
	case usage.APIUnknown:
		return ""
	}
	if strings.Contains(path, "/openai/deployments/") {
		return "azure"
	}
	return "openai"
}
