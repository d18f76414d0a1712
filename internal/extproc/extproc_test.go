package extproc_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/virtualkeys/sidecar/internal/extproc"
	"github.com/virtualkeys/sidecar/internal/extproc/extproctest"
	"github.com/virtualkeys/sidecar/internal/pricing"
	"github.com/virtualkeys/sidecar/internal/spend"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type recorder struct {
	mu   sync.Mutex
	recs []*spend.Record
}

func (r *recorder) Record(rec *spend.Record) {
	r.mu.Lock()
	cp := *rec
	r.recs = append(r.recs, &cp)
	r.mu.Unlock()
}

func (r *recorder) all() []*spend.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*spend.Record(nil), r.recs...)
}

type fixedPrices struct{ t *pricing.Table }

func (f fixedPrices) Table() *pricing.Table { return f.t }

type limiterCall struct {
	finish bool
	s      extproc.Subject
	u      extproc.Usage
}

type fakeLimiter struct {
	mu    sync.Mutex
	calls []limiterCall
}

func (l *fakeLimiter) Finish(_ context.Context, s extproc.Subject, u extproc.Usage) {
	l.mu.Lock()
	l.calls = append(l.calls, limiterCall{true, s, u})
	l.mu.Unlock()
}

func (l *fakeLimiter) Release(_ context.Context, s extproc.Subject) {
	l.mu.Lock()
	l.calls = append(l.calls, limiterCall{false, s, extproc.Usage{}})
	l.mu.Unlock()
}

type env struct {
	rec    *recorder
	lim    *fakeLimiter
	reg    *prometheus.Registry
	client extprocv3.ExternalProcessorClient
}

func table(t testing.TB) *pricing.Table {
	t.Helper()
	tb, err := pricing.Default().With(
		map[string]map[string]float64{"text-embedding-3-small": {"input_cost_per_token": 2e-8, "output_cost_per_token": 0}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func start(t testing.TB, cfg extproc.Config) *env {
	t.Helper()
	e := &env{rec: &recorder{}, lim: &fakeLimiter{}, reg: prometheus.NewRegistry()}
	cfg.Accountant, cfg.Limiter, cfg.Registerer = e.rec, e.lim, e.reg
	if cfg.Prices == nil {
		cfg.Prices = fixedPrices{table(t)}
	}
	srv, err := extproc.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); g.Stop() })
	e.client = extprocv3.NewExternalProcessorClient(conn)
	return e
}

func near(got, want float64) bool {
	if want == 0 {
		return got == 0
	}
	return math.Abs(got-want)/math.Abs(want) <= 1e-9
}

func gz(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

const hash = "0000000000000000000000000000000000000000000000000000000000000abc"

// TestRecordedResponses: each recorded provider response, through the real
// server over gRPC in odd-sized chunks, is charged the hand-computed
// LiteLLM cost (the same values as the pricing package's test).
func TestRecordedResponses(t *testing.T) {
	e := start(t, extproc.Config{})
	tests := []struct {
		file, ctype, path, requested string
		gzip                         bool
		want                         float64
	}{
		{"openai_chat.json", "application/json", "/v1/chat/completions", "gpt-4o", false, 86*2.5e-6 + 1920*1.25e-6 + 300*1e-5},
		{"openai_chat.json", "application/json", "/v1/chat/completions", "gpt-4o", true, 86*2.5e-6 + 1920*1.25e-6 + 300*1e-5},
		{"openai_chat_stream.sse", "text/event-stream", "/v1/chat/completions", "o3", false, 476*2e-6 + 1024*5e-7 + 2200*8e-6},
		{"openai_completions.json", "application/json", "/v1/completions", "gpt-3.5-turbo-instruct", false, 5*1.5e-6 + 7*2e-6},
		{"openai_embeddings.json", "application/json", "/v1/embeddings", "text-embedding-3-small", false, 8 * 2e-8},
		{"openai_responses.json", "application/json", "/v1/responses", "gpt-5", false, 36*1.25e-6 + 187*1e-5},
		{"openai_responses.sse", "text/event-stream", "/v1/responses", "gpt-4.1", false, 952*2e-6 + 2048*5e-7 + 400*8e-6},
		{"azure_chat.json", "application/json", "/openai/deployments/mini/chat/completions?api-version=2024-10-21", "gpt-4o-mini", false, 1000*1.5e-7 + 120*6e-7},
		{"anthropic_messages.json", "application/json", "/v1/messages", "claude-sonnet-4-5", false,
			2095*3e-6 + 10000*3e-7 + 1051*3.75e-6 + 1000*6e-6 + 503*1.5e-5},
		{"anthropic_messages.sse", "text/event-stream", "/v1/messages", "claude-opus-4-6", true,
			472*5e-6 + 30000*5e-7 + 1200*6.25e-6 + 1515*2.5e-5},
		{"gemini.json", "application/json", "/v1beta/models/gemini-2.5-pro:generateContent", "gemini-2.5-pro", false,
			150000*2.5e-6 + 100000*2.5e-7 + 3000*1.5e-5},
		{"gemini_stream.sse", "text/event-stream", "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", "", false,
			600*3e-7 + 300*1e-6 + 75*2.5e-6 + 150*2.5e-6},
		{"gemini_stream_array.json", "application/json", "/v1beta/models/gemini-2.0-flash:streamGenerateContent", "", false, 12*1e-7 + 9*4e-7},
		{"bedrock_converse.json", "application/json", "/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/converse", "", false,
			120*3e-6 + 4000*3e-7 + 500*3.75e-6 + 340*1.5e-5},
		{"bedrock_invoke_claude.json", "application/json", "/model/anthropic.claude-sonnet-4-5-20250929-v1:0/invoke", "", false, 50*3e-6 + 25*1.5e-5},
	}
	for i, tt := range tests {
		name := tt.file
		if tt.gzip {
			name += ".gz"
		}
		t.Run(name, func(t *testing.T) {
			body, err := os.ReadFile(filepath.Join("..", "usage", "testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			respHeaders := [][2]string{{":status", "200"}, {"content-type", tt.ctype}}
			if tt.gzip {
				body = gz(t, body)
				respHeaders = append(respHeaders, [2]string{"content-encoding", "gzip"})
			}
			reqID := "req-" + name
			md := map[string]string{"key_hash": hash, "key_alias": "alias", "team_id": "team", "user_id": "user"}
			if tt.requested != "" {
				md["model"] = tt.requested
			}
			ex := &extproctest.Exchange{
				RequestHeaders:  [][2]string{{":method", "POST"}, {":path", tt.path}, {"x-request-id", reqID}},
				LegacyValues:    i%2 == 1, // older Envoy: value instead of raw_value
				Metadata:        md,
				ResponseHeaders: respHeaders,
				Chunks:          extproctest.Split(body, 7+i),
			}
			if _, err := extproctest.Drive(t.Context(), e.client, ex); err != nil {
				t.Fatal(err)
			}
			var got *spend.Record
			for _, r := range e.rec.all() {
				if r.RequestID == reqID {
					got = r
				}
			}
			if got == nil {
				t.Fatal("no record")
			}
			if !near(got.Cost, tt.want) || got.Estimated || got.Unpriced || got.Status != "success" {
				t.Errorf("record %+v; want cost %.15g", got, tt.want)
			}
			if got.KeyHash != hash || got.TeamID != "team" || got.UserID != "user" || got.KeyAlias != "alias" || got.HTTPStatus != 200 {
				t.Errorf("identity %+v", got)
			}
		})
	}
}

func TestIdentityFromHeaders(t *testing.T) {
	e := start(t, extproc.Config{IdentityHeaderPrefix: "x-vk-"})
	body, _ := os.ReadFile("../usage/testdata/openai_chat.json")
	_, err := extproctest.Drive(t.Context(), e.client, &extproctest.Exchange{
		RequestHeaders: [][2]string{{":method", "POST"}, {":path", "/v1/chat/completions"}, {"x-request-id", "h1"},
			{"x-vk-key-hash", hash}, {"x-vk-team-id", "t"}, {"x-vk-user-id", "u"}, {"x-vk-model", "gpt-4o"}},
		ResponseHeaders: [][2]string{{":status", "200"}, {"content-type", "application/json"}},
		Chunks:          [][]byte{body},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := e.rec.all()
	if len(r) != 1 || r[0].KeyHash != hash || r[0].TeamID != "t" || r[0].UserID != "u" || r[0].Cost == 0 {
		t.Fatalf("records %+v", r)
	}
}

func TestOutcomes(t *testing.T) {
	errBody, _ := os.ReadFile("../usage/testdata/openai_error.json")
	noUsage, _ := os.ReadFile("../usage/testdata/openai_chat_stream_nousage.sse")
	chat, _ := os.ReadFile("../usage/testdata/openai_chat.json")
	md := map[string]string{"key_hash": hash, "model": "gpt-4o", "rl_lease": "lease-1"}
	reqH := func(id string) [][2]string {
		return [][2]string{{":method", "POST"}, {":path", "/v1/chat/completions"}, {"x-request-id", id}}
	}
	e := start(t, extproc.Config{UnknownModelCostPerToken: 1e-6})
	tests := []struct {
		name      string
		ex        extproctest.Exchange
		check     func(t *testing.T, r *spend.Record)
		finish    bool
		noRecord  bool
		outcome   string
		released  bool
		estimated bool
	}{
		{name: "provider error costs nothing", ex: extproctest.Exchange{RequestHeaders: reqH("e1"), Metadata: md,
			ResponseHeaders: [][2]string{{":status", "429"}, {"content-type", "application/json"}}, Chunks: [][]byte{errBody}},
			check: func(t *testing.T, r *spend.Record) {
				if r.Cost != 0 || r.Status != "failure" || r.HTTPStatus != 429 {
					t.Errorf("record %+v", r)
				}
			}, finish: true, outcome: "failed"},
		{name: "stream without usage is estimated", ex: extproctest.Exchange{RequestHeaders: reqH("e2"), Metadata: md,
			ResponseHeaders: [][2]string{{":status", "200"}, {"content-type", "text/event-stream"}}, Chunks: extproctest.Split(noUsage, 50)},
			check: func(t *testing.T, r *spend.Record) {
				if !r.Estimated || r.Cost <= 0 || r.CompletionTokens <= 0 {
					t.Errorf("record %+v", r)
				}
			}, finish: true, outcome: "estimated"},
		{name: "unknown model charged the default", ex: extproctest.Exchange{RequestHeaders: reqH("e3"),
			Metadata:        map[string]string{"key_hash": hash, "model": "my-private-model"},
			ResponseHeaders: [][2]string{{":status", "200"}, {"content-type", "application/json"}},
			Chunks:          [][]byte{bytes.ReplaceAll(chat, []byte(`"gpt-4o-2024-08-06"`), []byte(`"my-private-model"`))}},
			check: func(t *testing.T, r *spend.Record) {
				if !r.Unpriced || !near(r.Cost, float64(2006+300)*1e-6) {
					t.Errorf("record %+v", r)
				}
			}, finish: true, outcome: "unpriced"},
		{name: "client gone mid-stream: partial charge, release", ex: extproctest.Exchange{RequestHeaders: reqH("e4"), Metadata: md,
			ResponseHeaders: [][2]string{{":status", "200"}, {"content-type", "text/event-stream"}}, Chunks: extproctest.Split(noUsage, 20), CutAfter: 3},
			check: func(t *testing.T, r *spend.Record) {
				if r.Cost <= 0 {
					t.Errorf("record %+v", r)
				}
			}, released: true, outcome: "incomplete"},
		{name: "ended by trailers (skipped) after usage: complete", ex: extproctest.Exchange{RequestHeaders: reqH("e7"), Metadata: md, NoEndOfStream: true,
			ResponseHeaders: [][2]string{{":status", "200"}, {"content-type", "application/json"}}, Chunks: extproctest.Split(chat, 64)},
			check: func(t *testing.T, r *spend.Record) {
				if !near(r.Cost, 86*2.5e-6+1920*1.25e-6+300*1e-5) || r.Estimated {
					t.Errorf("record %+v", r)
				}
			}, finish: true, outcome: "metered"},
		{name: "master key: not charged", ex: extproctest.Exchange{RequestHeaders: reqH("e5"),
			ResponseHeaders: [][2]string{{":status", "200"}, {"content-type", "application/json"}}, Chunks: [][]byte{chat}},
			noRecord: true, finish: true, outcome: "anonymous"},
		{name: "observability mode: nothing awaited, still metered", ex: extproctest.Exchange{RequestHeaders: reqH("e6"), Metadata: md, Observability: true,
			ResponseHeaders: [][2]string{{":status", "200"}, {"content-type", "application/json"}}, Chunks: [][]byte{chat}},
			check: func(t *testing.T, r *spend.Record) {
				if !near(r.Cost, 86*2.5e-6+1920*1.25e-6+300*1e-5) {
					t.Errorf("record %+v", r)
				}
			}, finish: true, outcome: "metered"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := tt.ex.RequestHeaders[2][1]
			before := testutil.ToFloat64(outcome(t, e.reg, tt.outcome))
			nLim := len(e.lim.calls)
			if _, err := extproctest.Drive(t.Context(), e.client, &tt.ex); err != nil {
				t.Fatal(err)
			}
			if tt.released { // the server sees the cancel asynchronously
				waitFor(t, func() bool { e.lim.mu.Lock(); defer e.lim.mu.Unlock(); return len(e.lim.calls) > nLim })
			}
			var got *spend.Record
			for _, r := range e.rec.all() {
				if r.RequestID == id {
					got = r
				}
			}
			if tt.noRecord != (got == nil) {
				t.Fatalf("record = %+v, want record: %v", got, !tt.noRecord)
			}
			if got != nil && tt.check != nil {
				tt.check(t, got)
			}
			if after := testutil.ToFloat64(outcome(t, e.reg, tt.outcome)); after != before+1 {
				t.Errorf("outcome %s: %v -> %v", tt.outcome, before, after)
			}
			e.lim.mu.Lock()
			calls := e.lim.calls[nLim:]
			e.lim.mu.Unlock()
			if len(calls) != 1 {
				t.Fatalf("limiter calls %+v, want exactly one", calls)
			}
			if calls[0].finish == tt.released {
				t.Errorf("limiter call %+v, want finish=%v", calls[0], !tt.released)
			}
		})
	}
	if c := e.lim.calls; c[0].s.Lease != "lease-1" || c[0].s.KeyHash != hash || c[0].s.Model != "gpt-4o" {
		t.Errorf("limiter subject %+v", c[0].s)
	}
}

func outcome(t *testing.T, g prometheus.Gatherer, name string) prometheus.Counter {
	t.Helper()
	return counterFrom(t, g, "sidecar_extproc_responses_total", "outcome", name)
}

// TestInjectIncludeUsage: an OpenAI chat stream that did not ask for usage
// gets it injected (body mutation, content-length updated); other requests
// are not buffered at all.
func TestInjectIncludeUsage(t *testing.T) {
	e := start(t, extproc.Config{InjectIncludeUsage: true})
	chat, _ := os.ReadFile("../usage/testdata/openai_chat_stream.sse")
	for _, tt := range []struct {
		name, path string
		body       string
		buffered   bool
		mutated    bool
	}{
		{"stream without usage", "/v1/chat/completions", `{"model":"o3","stream":true,"messages":[]}`, true, true},
		{"stream with usage", "/v1/chat/completions", `{"model":"o3","stream":true,"stream_options":{"include_usage":true}}`, true, false},
		{"not a stream", "/v1/chat/completions", `{"model":"o3","messages":[]}`, true, false},
		{"anthropic: not buffered", "/v1/messages", `{"model":"claude","stream":true}`, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res, err := extproctest.Drive(t.Context(), e.client, &extproctest.Exchange{
				RequestHeaders:  [][2]string{{":method", "POST"}, {":path", tt.path}, {"x-request-id", tt.name}},
				Metadata:        map[string]string{"key_hash": hash, "model": "o3"},
				RequestBody:     []byte(tt.body),
				ResponseHeaders: [][2]string{{":status", "200"}, {"content-type", "text/event-stream"}},
				Chunks:          [][]byte{chat},
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.BufferedBody != tt.buffered || (res.BodyMutation != nil) != tt.mutated {
				t.Fatalf("buffered %v mutated %q; want %v %v", res.BufferedBody, res.BodyMutation, tt.buffered, tt.mutated)
			}
			if tt.mutated && !strings.Contains(string(res.BodyMutation), `"include_usage":true`) {
				t.Errorf("mutation %s lacks include_usage", res.BodyMutation)
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []extproc.Config{
		{},
		{Accountant: &recorder{}},
		{Accountant: &recorder{}, Prices: fixedPrices{}, UnknownModelCostPerToken: -1},
		{Accountant: &recorder{}, Prices: fixedPrices{}, UnknownModelCostPerToken: math.NaN()},
		{Accountant: &recorder{}, Prices: fixedPrices{}, MaxBodyBytes: -1},
	} {
		if _, err := extproc.New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}
