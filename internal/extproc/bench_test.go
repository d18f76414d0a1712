package extproc

import (
	"strconv"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/virtualkeys/sidecar/internal/pricing"
	"github.com/virtualkeys/sidecar/internal/spend"
)

type nopAcct struct{}

func (nopAcct) Record(*spend.Record) {}

type tablePrices struct{ t *pricing.Table }

func (p tablePrices) Table() *pricing.Table { return p.t }

func sseChunks() []*extprocv3.ProcessingRequest {
	var out []*extprocv3.ProcessingRequest
	for i := range 49 {
		out = append(out, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{
			Body: []byte(`data: {"id":"chatcmpl-load","object":"chat.completion.chunk","created":1735689600,` +
				`"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"content":"tok` + strconv.Itoa(i) + ` "},"finish_reason":null}]}` + "\n\n"),
		}}})
	}
	return out
}

func newStream(s *Server) *stream {
	st := &stream{}
	s.requestHeaders(st, &extprocv3.ProcessingRequest{}, &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: ":method", RawValue: []byte("POST")}, {Key: ":path", RawValue: []byte("/v1/chat/completions")},
		{Key: "x-litellm-key-hash", RawValue: []byte("abc")}}}})
	s.responseHeaders(st, &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: ":status", RawValue: []byte("200")}, {Key: "content-type", RawValue: []byte("text/event-stream")}}}})
	return st
}

// TestSSEChunkAllocs pins the steady-state allocations of one streamed
// response chunk in the server (the gRPC transport's are apart).
func TestSSEChunkAllocs(t *testing.T) {
	s, err := New(Config{Accountant: nopAcct{}, Prices: tablePrices{pricing.Default()}})
	if err != nil {
		t.Fatal(err)
	}
	chunks := sseChunks()
	st := newStream(s)
	for _, c := range chunks { // warm the buffers
		s.handle(st, c)
	}
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		s.handle(st, chunks[i%len(chunks)])
		i++
	})
	if allocs > 2 {
		t.Fatalf("%.1f allocations per SSE chunk, want <= 2", allocs)
	}
}

func BenchmarkSSEChunk(b *testing.B) {
	s, err := New(Config{Accountant: nopAcct{}, Prices: tablePrices{pricing.Default()}})
	if err != nil {
		b.Fatal(err)
	}
	chunks := sseChunks()
	st := newStream(s)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		s.handle(st, chunks[i%len(chunks)])
		i++
	}
}
