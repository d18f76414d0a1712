// Command loadgen drives ext_authz Check calls over a real gRPC connection
// against a running sidecar and reports throughput, latency percentiles
// and, from the server's /metrics (process_cpu_seconds_total), the
// server's CPU time per Check.
//
//	loadgen -addr 127.0.0.1:9001 -key sk-... -concurrency 10 -duration 10s \
//	        -metrics http://127.0.0.1:4000/metrics
//
// With -serve it is the server instead: an ext_authz service on -addr over
// an embedded SQLite store seeded with -key (generated and printed when
// empty), with /metrics on -metrics-addr, so the Check path can be
// measured without the full sidecar binary.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/virtualkeys/sidecar/internal/authz"
	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store/sqlite"
)

// chatBody is the default request body: a realistic chat completion.
const chatBody = `{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant that answers concisely."},{"role":"user","content":"Summarise the plot of Hamlet in three sentences, naming the main characters and how each of them dies."}],"temperature":0.7,"max_tokens":512,"stream":true,"stream_options":{"include_usage":true}}`

type options struct {
	addr, key, bodyFile, path, metrics string
	concurrency, conns, n              int
	duration                           time.Duration
	serve, decode                      bool
	metricsAddr, master                string
}

func main() {
	var o options
	flag.StringVar(&o.addr, "addr", "127.0.0.1:9001", "ext_authz gRPC address (to call, or with -serve to listen on)")
	flag.StringVar(&o.key, "key", "", "virtual key to send as Authorization: Bearer (with -serve: the key to seed)")
	flag.IntVar(&o.concurrency, "concurrency", 10, "concurrent callers")
	flag.IntVar(&o.conns, "conns", 1, "gRPC connections (Envoy uses few)")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "how long to run (ignored when -n is set)")
	flag.IntVar(&o.n, "n", 0, "total Checks to send (0: run for -duration)")
	flag.StringVar(&o.bodyFile, "body", "", "request body file (default: a chat-completions body for gpt-4o)")
	flag.StringVar(&o.path, "path", "/v1/chat/completions", "request path")
	flag.StringVar(&o.metrics, "metrics", "http://127.0.0.1:4000/metrics", "server /metrics URL for CPU per Check (empty: skip)")
	flag.BoolVar(&o.decode, "decode", false, "marshal every request and unmarshal every response (default: send one pre-encoded request, classify responses by their top-level field)")
	flag.BoolVar(&o.serve, "serve", false, "run a Check server on -addr instead of generating load")
	flag.StringVar(&o.metricsAddr, "metrics-addr", "127.0.0.1:4000", "with -serve: /metrics listen address")
	flag.StringVar(&o.master, "master", "sk-loadgen-master", "with -serve: master key")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if o.serve {
		err = serve(ctx, o, os.Stdout)
	} else {
		err = run(ctx, o, os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

// serve runs an ext_authz server seeded with one key until ctx ends.
func serve(ctx context.Context, o options, out io.Writer) error {
	dir, err := os.MkdirTemp("", "loadgen-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	st, err := sqlite.Open(ctx, filepath.Join(dir, "keys.db"), log)
	if err != nil {
		return err
	}
	defer st.Close()
	if o.key == "" {
		o.key = keys.Generate()
	}
	alias := "loadgen"
	if err := st.Create(ctx, &keys.Key{Token: keys.HashHex(o.key), KeyAlias: &alias, Models: []string{"gpt-4o", "gpt-4o-mini"}}); err != nil {
		return fmt.Errorf("seed key: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	c, err := cache.New(cache.Config{Loader: st, Registerer: reg, Logger: log})
	if err != nil {
		return err
	}
	defer c.Close()
	defer c.Attach(st)()
	a, err := authz.New(authz.Config{Cache: c, MasterKey: o.master, Registerer: reg, Logger: log})
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", o.addr)
	if err != nil {
		return err
	}
	srv := authz.NewServer(a)
	g := grpc.NewServer(srv.ServerOptions(1 << 20)...)
	srv.Register(g)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile) // to see where a Check's CPU goes
	hs := &http.Server{Addr: o.metricsAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- g.Serve(lis) }()
	go func() { errc <- hs.ListenAndServe() }()
	fmt.Fprintf(out, "serving ext_authz on %s, metrics on http://%s/metrics, key %s\n", lis.Addr(), o.metricsAddr, o.key)
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	g.Stop()
	_ = hs.Close()
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	return err
}

// result is what one run measured.
type result struct {
	n, allowed, denied, errs int
	elapsed                  time.Duration
	lat                      []time.Duration // sorted
	cpu                      float64         // server CPU seconds, -1 unknown
	firstErr                 error
}

func (r *result) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[min(len(r.lat)-1, int(float64(len(r.lat))*p))]
}

func run(ctx context.Context, o options, out io.Writer) error {
	if o.key == "" {
		return errors.New("-key is required")
	}
	body := []byte(chatBody)
	if o.bodyFile != "" {
		b, err := os.ReadFile(o.bodyFile)
		if err != nil {
			return err
		}
		body = b
	}
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
		Method: "POST", Path: o.path, Host: "api.openai.com", Protocol: "HTTP/1.1", Size: int64(len(body)),
		Headers: map[string]string{
			":method": "POST", ":path": o.path, ":authority": "api.openai.com", ":scheme": "https",
			"authorization": "Bearer " + o.key, "content-type": "application/json", "user-agent": "OpenAI/Python 1.54.0",
			"x-request-id": "7d8f0c2e-3b7a-4f5e-9d1c-2a6b8e4f0a11", "accept": "application/json",
		},
		RawBody: body,
	}}}}
	clients := make([]authv3.AuthorizationClient, max(1, o.conns))
	conns := make([]*grpc.ClientConn, len(clients))
	for i := range clients {
		conn, err := grpc.NewClient(o.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		conns[i], clients[i] = conn, authv3.NewAuthorizationClient(conn)
	}
	// Warm up with a typed call: connect, make the server cache the key,
	// and check the key is allowed.
	if resp, err := clients[0].Check(ctx, req); err != nil {
		return fmt.Errorf("warm-up Check: %w", err)
	} else if resp.GetOkResponse() == nil {
		fmt.Fprintf(out, "note: the key is denied: %s\n", resp.GetDeniedResponse().GetBody())
	}
	if !o.decode {
		raw, err := proto.Marshal(req)
		if err != nil {
			return err
		}
		r, cpuErr := measure(ctx, o, func() *result { return loadRaw(ctx, o, conns, raw) })
		report(out, o, r, cpuErr)
		return r.err()
	}
	r, cpuErr := measure(ctx, o, func() *result { return load(ctx, o, clients, req) })
	report(out, o, r, cpuErr)
	return r.err()
}

func (r *result) err() error {
	if r.errs > 0 || r.allowed == 0 {
		return fmt.Errorf("%d errors, %d allowed of %d", r.errs, r.allowed, r.n)
	}
	return nil
}

// measure runs one load and the server's CPU seconds spent during it.
func measure(ctx context.Context, o options, run func() *result) (*result, error) {
	time.Sleep(100 * time.Millisecond)
	cpu0, cpuErr := serverCPU(ctx, o.metrics)
	r := run()
	r.cpu = -1
	if cpuErr == nil {
		if cpu1, err := serverCPU(ctx, o.metrics); err == nil {
			r.cpu = cpu1 - cpu0
		}
	}
	return r, cpuErr
}

// rawCodec sends pre-encoded request bytes and keeps response bytes as
// they came, so the load generator spends its CPU on the calls rather than
// on re-encoding one constant request and decoding every response. The
// server's work is unchanged: it decodes and answers each Check in full.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	p := v.(*[]byte)
	*p = append((*p)[:0], data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

const checkMethod = "/envoy.service.auth.v3.Authorization/Check"

// verdict classifies an encoded CheckResponse by its top-level fields:
// ok_response (3) allows, denied_response (2) denies.
func verdict(b []byte) (allowed, ok bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false, false
		}
		b = b[n:]
		switch num {
		case 3:
			return true, true
		case 2:
			return false, true
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return false, false
		}
		b = b[m:]
	}
	return false, false
}

// loadRaw is load over pre-encoded requests (see rawCodec).
func loadRaw(ctx context.Context, o options, conns []*grpc.ClientConn, req []byte) *result {
	return drive(ctx, o, func(i int) func() (allowed bool, err error) {
		conn := conns[i%len(conns)]
		in, out := req, make([]byte, 0, 1024)
		codec := grpc.ForceCodec(rawCodec{})
		return func() (bool, error) {
			if err := conn.Invoke(ctx, checkMethod, &in, &out, codec); err != nil {
				return false, err
			}
			allowed, ok := verdict(out)
			if !ok {
				return false, errors.New("unparseable CheckResponse")
			}
			return allowed, nil
		}
	})
}

func load(ctx context.Context, o options, clients []authv3.AuthorizationClient, req *authv3.CheckRequest) *result {
	return drive(ctx, o, func(i int) func() (bool, error) {
		cl := clients[i%len(clients)]
		return func() (bool, error) {
			resp, err := cl.Check(ctx, req)
			if err != nil {
				return false, err
			}
			return resp.GetOkResponse() != nil, nil
		}
	})
}

// drive runs o.concurrency closed-loop callers, each making calls with the
// function newCaller(i) returns, and collects every call's latency.
func drive(ctx context.Context, o options, newCaller func(i int) func() (allowed bool, err error)) *result {
	// The run ends by a flag, not a context deadline, so calls in flight
	// at the end complete instead of counting as errors.
	var stopped atomic.Bool
	if o.n == 0 {
		t := time.AfterFunc(o.duration, func() { stopped.Store(true) })
		defer t.Stop()
	}
	var left atomic.Int64
	left.Store(int64(o.n))
	type worker struct {
		lat                   []time.Duration
		allowed, denied, errs int
		firstErr              error
	}
	ws := make([]worker, o.concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range ws {
		w := &ws[i]
		w.lat = make([]time.Duration, 0, 1<<16)
		call := newCaller(i)
		wg.Go(func() {
			for ctx.Err() == nil && !stopped.Load() {
				if o.n > 0 && left.Add(-1) < 0 {
					return
				}
				t0 := time.Now()
				allowed, err := call()
				d := time.Since(t0)
				switch {
				case err != nil:
					if ctx.Err() != nil {
						return // interrupted
					}
					w.errs++
					if w.firstErr == nil {
						w.firstErr = err
					}
				case allowed:
					w.allowed++
				default:
					w.denied++
				}
				w.lat = append(w.lat, d)
			}
		})
	}
	wg.Wait()
	r := &result{elapsed: time.Since(start)}
	for _, w := range ws {
		r.lat = append(r.lat, w.lat...)
		r.allowed += w.allowed
		r.denied += w.denied
		r.errs += w.errs
		if r.firstErr == nil {
			r.firstErr = w.firstErr
		}
	}
	r.n = len(r.lat)
	slices.Sort(r.lat)
	return r
}

func report(out io.Writer, o options, r *result, cpuErr error) {
	fmt.Fprintf(out, "checks      %d (allowed %d, denied %d, errors %d) in %v, concurrency %d, conns %d\n",
		r.n, r.allowed, r.denied, r.errs, r.elapsed.Round(time.Millisecond), o.concurrency, max(1, o.conns))
	fmt.Fprintf(out, "throughput  %.0f checks/s\n", float64(r.n)/r.elapsed.Seconds())
	fmt.Fprintf(out, "latency     p50 %v  p90 %v  p99 %v  p99.9 %v  max %v\n",
		us(r.pct(.50)), us(r.pct(.90)), us(r.pct(.99)), us(r.pct(.999)), us(r.pct(1)))
	if r.firstErr != nil {
		fmt.Fprintf(out, "first error %v\n", r.firstErr)
	}
	switch {
	case r.cpu >= 0 && r.n > 0:
		fmt.Fprintf(out, "server CPU  %.1f µs/check (%.2f s over the run)\n", r.cpu*1e6/float64(r.n), r.cpu)
	case cpuErr != nil:
		fmt.Fprintf(out, "server CPU  unknown: %v\n", cpuErr)
	}
}

func us(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e3, 'f', 1, 64) + "µs" }

// serverCPU reads process_cpu_seconds_total from a Prometheus text endpoint.
func serverCPU(ctx context.Context, url string) (float64, error) {
	if url == "" {
		return 0, errors.New("no -metrics URL")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return parseCPU(resp.Body)
}

func parseCPU(r io.Reader) (float64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "process_cpu_seconds_total "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no process_cpu_seconds_total in /metrics (is the process collector registered?)")
}
