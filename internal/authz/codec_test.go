package authz

import (
	"context"
	"fmt"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/keys"
)

type noKeys struct{}

func (noKeys) Lookup(context.Context, string) (*keys.Key, error) { return nil, keys.ErrNotFound }

func codecServer(t *testing.T) (*Server, codec) {
	t.Helper()
	c, err := cache.New(cache.Config{Loader: noKeys{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	a, err := New(Config{Cache: c, MasterKey: "sk-master"})
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(a)
	return s, codec{wire: s.wire, base: encoding.GetCodecV2(grpcproto.Name)}
}

func decode(t *testing.T, b mem.BufferSlice) *authv3.CheckResponse {
	t.Helper()
	var r authv3.CheckResponse
	if err := proto.Unmarshal(b.Materialize(), &r); err != nil {
		t.Fatal(err)
	}
	return &r
}

func allowFor(e *cache.Entry, model string) *Decision {
	return &Decision{Allowed: true, Entry: e, Model: model, RemoveHeaders: []string{"authorization"}}
}

// A memoised allow response goes out as its recorded bytes, which decode
// to the same message; a response that is not shared is marshaled as
// usual; a response that left the memo is no longer served from bytes.
func TestCodecSendsSharedResponsesPreEncoded(t *testing.T) {
	s, c := codecServer(t)
	team, user := "t", "u"
	e := &cache.Entry{Key: &keys.Key{Token: "h1", TeamID: &team, UserID: &user}}
	resp := s.allow(allowFor(e, "gpt-4o"))
	if s.allow(allowFor(e, "gpt-4o")) != resp {
		t.Fatal("allow response not memoised")
	}
	rec, ok := s.wire.m.Load(resp)
	if !ok {
		t.Fatal("memoised response has no recorded wire form")
	}
	out, err := c.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || &out[0].ReadOnlyData()[0] != &rec.(mem.Buffer).ReadOnlyData()[0] {
		t.Error("the codec marshaled a response it has bytes for")
	}
	if got := decode(t, out); !proto.Equal(got, resp) {
		t.Errorf("recorded bytes decode to\n%v\nwant\n%v", got, resp)
	}
	out.Free() // as gRPC does after the write: the bytes stay intact
	if got := decode(t, mem.BufferSlice{rec.(mem.Buffer)}); !proto.Equal(got, resp) {
		t.Error("freeing the sent buffer changed the recorded bytes")
	}

	// not shared: the proto codec's own encoding
	other := &authv3.CheckResponse{HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{HeadersToRemove: []string{"x"}}}}
	out, err = c.Marshal(other)
	if err != nil || !proto.Equal(decode(t, out), other) {
		t.Errorf("unshared response: %v", err)
	}
	// constant denials are pre-encoded too
	for _, d := range s.denied {
		if _, ok := s.wire.m.Load(d); !ok {
			t.Error("a constant denial has no recorded wire form")
		}
	}
}

// The recorded wire forms are bounded by the memo: a response replaced in
// its slot is dropped.
func TestWireCacheBoundedByMemo(t *testing.T) {
	s, _ := codecServer(t)
	e := &cache.Entry{Key: &keys.Key{Token: "h"}}
	for i := range 3 * memoSlots {
		s.allow(allowFor(e, fmt.Sprintf("model-%d", i)))
	}
	n := 0
	s.wire.m.Range(func(k, _ any) bool {
		n++
		r := k.(*authv3.CheckResponse)
		for i := range s.memo.slots {
			if m := s.memo.slots[i].Load(); m != nil && m.resp == r {
				return true
			}
		}
		for _, d := range s.denied {
			if d == r {
				return true
			}
		}
		t.Errorf("recorded wire form of a response neither memoised nor a constant denial")
		return false
	})
	if n > memoSlots+len(s.denied) {
		t.Errorf("%d recorded wire forms, want at most %d", n, memoSlots+len(s.denied))
	}
}
