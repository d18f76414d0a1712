package authz

import (
	"context"
	"hash/maphash"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/virtualkeys/sidecar/internal/apierr"
	"github.com/virtualkeys/sidecar/internal/cache"
)

// Server is the ext_authz gRPC service over an Authorizer.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	a      *Authorizer
	denied map[*apierr.Error]*authv3.CheckResponse // constant denials, rendered once
	memo   *allowMemo
	wire   *wireCache // the wire form of the shared responses (codec.go)
}

// NewServer returns the gRPC service for a.
func NewServer(a *Authorizer) *Server {
	s := &Server{a: a, denied: map[*apierr.Error]*authv3.CheckResponse{}, memo: &allowMemo{seed: maphash.MakeSeed()}, wire: &wireCache{}}
	for _, e := range []*apierr.Error{errNoKey, errMalformed, errBlocked} {
		s.denied[e] = deniedResponse(e, ReasonNoCredential)
		s.wire.add(s.denied[e])
	}
	return s
}

// Register registers the service on g.
func (s *Server) Register(g *grpc.Server) { authv3.RegisterAuthorizationServer(g, s) }

// ServerOptions are the gRPC server settings for a localhost ext_authz
// service: messages up to maxRecvBytes of body (plus headroom for
// headers), many concurrent streams over Envoy's few connections, and
// keepalive pings from Envoy accepted. No MaxConnectionAge: Envoy holds
// its connections.
func ServerOptions(maxRecvBytes int) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxRecvBytes + 256<<10),
		grpc.MaxConcurrentStreams(4096),
		// A pool of stream workers instead of a goroutine per RPC: their
		// stacks stay grown, so a Check does not pay for stack copying
		// (about 14% of server CPU in a profile without it). Several per
		// core: a stream finding every worker busy gets a goroutine.
		grpc.NumStreamWorkers(uint32(max(16, 4*runtime.GOMAXPROCS(0)))),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Minute, Timeout: 20 * time.Second}),
	}
}

var okStatus = &rpcstatus.Status{Code: int32(codes.OK)}

var jsonContentType = []*corev3.HeaderValueOption{{
	Header:       &corev3.HeaderValue{Key: "content-type", Value: "application/json"},
	AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
}}

// Check decides one request. A policy denial is an OK RPC carrying a
// denied_response with LiteLLM's status and JSON; a decision that could not
// be made (store down, deadline) is a gRPC error, so Envoy applies
// status_on_error and fails closed.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	h := req.GetAttributes().GetRequest().GetHttp()
	r := Request{Method: h.GetMethod(), Path: h.GetPath(), Headers: h.GetHeaders()}
	if r.Headers == nil {
		r.Headers = map[string]string{}
	}
	if rb := h.GetRawBody(); len(rb) > 0 {
		r.Body = rb
	} else if b := h.GetBody(); b != "" {
		r.Body = []byte(b)
	}
	if r.Path == "" {
		r.Path = r.Headers[":path"]
	}
	d := s.a.Decide(ctx, &r)
	if d.Allowed {
		if d.RateLimit != nil { // per-request headers and lease: not memoised
			return withRateLimit(s.allow(&d), &d), nil
		}
		return s.allow(&d), nil
	}
	if d.Err.Status == http.StatusServiceUnavailable {
		code := codes.Unavailable
		if ctx.Err() != nil {
			code = codes.DeadlineExceeded
		}
		return nil, grpcstatus.Error(code, d.Err.Message)
	}
	if d.RateLimit != nil {
		return rateLimitDenied(&d), nil
	}
	if resp, ok := s.denied[d.Err]; ok {
		return resp, nil
	}
	return deniedResponse(d.Err, d.Reason), nil
}

func deniedResponse(e *apierr.Error, reason Reason) *authv3.CheckResponse {
	code := codes.Unauthenticated
	switch {
	case reason == ReasonModelDenied:
		code = codes.PermissionDenied
	case e.Status == http.StatusBadRequest || e.Status == http.StatusTooManyRequests:
		code = codes.ResourceExhausted
	case e.Status != http.StatusUnauthorized:
		code = codes.PermissionDenied
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code), Message: e.Type},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(e.Status)},
			Headers: jsonContentType,
			Body:    string(e.JSON()),
		}},
	}
}

// allowKey names one memoised allow response of a key: the model and
// where the credential came in are all that vary.
type allowKey struct {
	model     string
	from      string
	fromQuery bool
}

func header(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}
}

// allow returns the allow response. Responses depend only on the key, the
// model and the credential source, and protobuf messages are safe to
// marshal concurrently, so responses are built once and shared through a
// bounded memo (see allowMemo): the keys in use get theirs without
// allocating, and a cached key that is not in use costs nothing for it.
func (s *Server) allow(d *Decision) *authv3.CheckResponse {
	if d.Entry == nil {
		return s.build(d)
	}
	if len(d.RemoveHeaders) > 1 {
		return s.build(d) // several credentials (rare): the memo key could not tell them apart
	}
	k := allowKey{model: d.Model, fromQuery: len(d.RemoveQuery) > 0}
	if len(d.RemoveHeaders) == 1 {
		k.from = d.RemoveHeaders[0]
	}
	i := s.memo.index(d.Entry, &k)
	if m := s.memo.slots[i].Load(); m != nil && m.entry == d.Entry && m.key == k {
		return m.resp
	}
	resp := s.build(d)
	k.model = strings.Clone(k.model)
	s.wire.add(resp)
	if old := s.memo.slots[i].Swap(&memoSlot{entry: d.Entry, key: k, resp: resp}); old != nil {
		s.wire.drop(old.resp)
	}
	return resp
}

// allowMemo is a direct-mapped table of built allow responses, indexed by
// (entry, model, credential source). A slot holds the entry it was built
// for, so a reloaded key (a new entry) never gets an old response, and a
// colliding request just rebuilds and takes the slot. It bounds the memory
// of memoised responses to memoSlots of them (about 2.5 KB each), whatever
// the number of cached keys.
type allowMemo struct {
	seed  maphash.Seed
	slots [memoSlots]atomic.Pointer[memoSlot]
}

// memoSlots is the size of the allow-response memo (a power of two): about
// 10 MB when full.
const memoSlots = 4096

type memoSlot struct {
	entry *cache.Entry
	key   allowKey
	resp  *authv3.CheckResponse
}

func (m *allowMemo) index(e *cache.Entry, k *allowKey) uint64 {
	h := e.ID() ^ maphash.String(m.seed, k.model) ^ 31*maphash.String(m.seed, k.from)
	if k.fromQuery {
		h = ^h
	}
	return h & (memoSlots - 1)
}

func (s *Server) build(d *Decision) *authv3.CheckResponse {
	var headers []*corev3.HeaderValueOption
	md := map[string]*structpb.Value{}
	for _, kv := range s.a.Identity(d) {
		headers = append(headers, header(kv[0], kv[1]))
		md[strings.ReplaceAll(kv[0][len(s.a.prefix):], "-", "_")] = structpb.NewStringValue(kv[1])
	}
	resp := &authv3.CheckResponse{
		Status: okStatus,
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers:                 headers,
			HeadersToRemove:         append(slices.Clip(d.RemoveHeaders), s.a.Unset(d)...),
			QueryParametersToRemove: d.RemoveQuery,
		}},
	}
	if len(md) > 0 {
		resp.DynamicMetadata = &structpb.Struct{Fields: md}
	}
	return resp
}
