package authz

import (
	"fmt"
	"sync"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// wireCache holds the wire form of the responses the Server shares between
// Checks (memoised allows, constant denials), so gRPC sends them without
// marshaling each time: on a cache hit, marshaling the response was about
// 14% of the server's CPU per Check, most of it the dynamic metadata map.
// Entries are dropped when their response leaves the memo, so it holds at
// most memoSlots of them plus the constant denials.
type wireCache struct{ m sync.Map } // *authv3.CheckResponse -> mem.Buffer

// add records resp's wire form. resp must not change afterwards.
func (w *wireCache) add(resp *authv3.CheckResponse) {
	b, err := proto.Marshal(resp)
	if err != nil {
		return // the codec marshals it on each send, as for any response
	}
	w.m.Store(resp, mem.Buffer(mem.SliceBuffer(b)))
}

func (w *wireCache) drop(resp *authv3.CheckResponse) { w.m.Delete(resp) }

// codec is gRPC's proto codec, except that a response with a recorded
// wire form is sent as those bytes. Everything else, requests included,
// goes through the proto codec unchanged.
type codec struct {
	wire *wireCache
	base encoding.CodecV2
}

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*authv3.CheckResponse); ok {
		if b, ok := c.wire.m.Load(r); ok {
			// A fresh one-element slice over the shared, read-only bytes:
			// SliceBuffer's Free does nothing, so gRPC releasing it after the
			// write leaves them intact.
			return mem.BufferSlice{b.(mem.Buffer)}, nil
		}
	}
	return c.base.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error { return c.base.Unmarshal(data, v) }

func (c codec) Name() string { return c.base.Name() }

// ServerOptions are ServerOptions(maxRecvBytes) with the codec that sends
// this Server's shared responses pre-encoded. Every service on the gRPC
// server gets it; messages other than those responses are marshaled as
// usual.
func (s *Server) ServerOptions(maxRecvBytes int) []grpc.ServerOption {
	base := encoding.GetCodecV2(grpcproto.Name)
	if base == nil {
		panic(fmt.Sprintf("authz: gRPC has no %q codec", grpcproto.Name))
	}
	return append(ServerOptions(maxRecvBytes), grpc.ForceServerCodecV2(codec{wire: s.wire, base: base}))
}
