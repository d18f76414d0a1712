// Command extprocload measures the ext_proc metering server as Envoy drives
// it: one gRPC stream per request carrying the request headers (with the
// ext_authz dynamic metadata), the response headers and the response body
// chunks, each answered before the next is sent. In the same run it drives
// a no-op ext_proc server (this binary re-executed with -noop, answering
// every message with an empty response) the same way, and reports for both
// the server process's CPU per request (from /proc/<pid>/stat), the
// per-request latency percentiles, and the ratio to the no-op floor.
//
//	go build -o /tmp/sidecar ./cmd/sidecar && go build -o /tmp/extprocload ./cmd/extprocload
//	/tmp/extprocload -sidecar /tmp/sidecar -shape sse -n 20000 -c 8
//
// Shapes: json (a ~1 KB OpenAI chat completion) and sse (an OpenAI chat
// stream of 50 chunks, the last one carrying usage). Both send a chat
// request body when the server asks for it (the sidecar does, to inject
// stream_options.include_usage; the no-op server does not).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/virtualkeys/sidecar/internal/authz"
	"github.com/virtualkeys/sidecar/internal/extproc/extproctest"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "extprocload:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("extprocload", flag.ContinueOnError)
	sidecar := fs.String("sidecar", "", "path of the built sidecar binary (required unless -noop)")
	noop := fs.String("noop", "", "serve a no-op ext_proc server on this address (used by the tool itself)")
	shape := fs.String("shape", "json", "response shape: json (1 KB) or sse (50 chunks)")
	n := fs.Int("n", 10000, "requests per target")
	c := fs.Int("c", 8, "concurrent streams")
	rounds := fs.Int("rounds", 6, "alternating rounds per target")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *noop != "" {
		return serveNoop(*noop)
	}
	if *sidecar == "" {
		return errors.New("-sidecar is required")
	}
	ex, err := exchange(*shape)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "extprocload")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	noopAddr := freeAddr()
	noopCmd := exec.Command(self, "-noop", noopAddr)
	noopCmd.Stderr = os.Stderr
	if err := noopCmd.Start(); err != nil {
		return err
	}
	defer stop(noopCmd)
	scAddr := freeAddr()
	scCmd := exec.Command(*sidecar, "--data-dir", filepath.Join(dir, "data"), "--grpc-addr", scAddr,
		"--http-addr", freeAddr(), "--master-key", "sk-extprocload-master", "--log-level", "warn")
	scCmd.Stderr = os.Stderr
	if err := scCmd.Start(); err != nil {
		return err
	}
	defer stop(scCmd)

	fmt.Printf("shape %s, %d requests per target in %d alternating rounds, %d concurrent streams, %d response chunks\n", *shape, *n, *rounds, *c, len(ex.Chunks))
	targets := []*target{{name: "no-op ext_proc", addr: noopAddr, pid: noopCmd.Process.Pid}, {name: "sidecar ext_proc", addr: scAddr, pid: scCmd.Process.Pid}}
	for _, t := range targets {
		if err := t.connect(ex, *c); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		defer t.conn.Close()
	}
	// Alternate the targets in rounds so a neighbour's load on a shared
	// machine hits both alike.
	per := max(1, *n / *rounds)
	for range *rounds {
		for _, t := range targets {
			if err := t.round(ex, per, *c); err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
		}
	}
	floor, got := targets[0].result(), targets[1].result()
	fmt.Println(floor)
	fmt.Println(got)
	fmt.Printf("ratio to the no-op floor: CPU/request %.2fx, p50 %.2fx, p99 %.2fx; latency added p50 %v, p99 %v\n",
		got.cpuPerReq/floor.cpuPerReq, float64(got.p50)/float64(floor.p50), float64(got.p99)/float64(floor.p99),
		got.p50-floor.p50, got.p99-floor.p99)
	return nil
}

type result struct {
	name      string
	n         int
	wall      time.Duration
	cpuPerReq float64 // microseconds of server CPU per request
	p50, p99  time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("%-17s %6d req in %v (%.0f req/s): server CPU %.1f µs/request, latency p50 %v p99 %v",
		r.name, r.n, r.wall.Round(time.Millisecond), float64(r.n)/r.wall.Seconds(), r.cpuPerReq, r.p50, r.p99)
}

type target struct {
	name   string
	addr   string
	pid    int
	conn   *grpc.ClientConn
	client extprocv3.ExternalProcessorClient
	cpu    time.Duration
	wall   time.Duration
	lat    []time.Duration
}

func (t *target) connect(ex *extproctest.Exchange, c int) error {
	conn, err := grpc.NewClient(t.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	t.conn, t.client = conn, extprocv3.NewExternalProcessorClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := extproctest.Drive(context.Background(), t.client, ex); err == nil {
			break
		} else if time.Now().After(deadline) {
			return fmt.Errorf("server not answering: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return load(context.Background(), t.client, ex, 500, c, nil) // warm up
}

func (t *target) round(ex *extproctest.Exchange, n, c int) error {
	lat := make([]time.Duration, n)
	cpu0, err := procCPU(t.pid)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := load(context.Background(), t.client, ex, n, c, lat); err != nil {
		return err
	}
	t.wall += time.Since(start)
	cpu1, err := procCPU(t.pid)
	if err != nil {
		return err
	}
	t.cpu += cpu1 - cpu0
	t.lat = append(t.lat, lat...)
	return nil
}

func (t *target) result() result {
	slices.Sort(t.lat)
	n := len(t.lat)
	return result{name: t.name, n: n, wall: t.wall, cpuPerReq: float64(t.cpu.Microseconds()) / float64(n),
		p50: t.lat[n/2], p99: t.lat[n*99/100]}
}

var seq atomic.Int64

func load(ctx context.Context, client extprocv3.ExternalProcessorClient, base *extproctest.Exchange, n, c int, lat []time.Duration) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, c)
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ex := *base
			ex.RequestHeaders = slices.Clone(base.RequestHeaders)
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				ex.RequestHeaders[2][1] = "load-" + strconv.FormatInt(seq.Add(1), 10) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
				t := time.Now()
				if _, err := extproctest.Drive(ctx, client, &ex); err != nil {
					errs <- err
					return
				}
				if lat != nil {
					lat[i] = time.Since(t)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// procCPU is the user+system CPU time of process pid.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the ")" closing the command name: state is field 3;
	// utime and stime are fields 14 and 15.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / hz, nil
}

func exchange(shape string) (*extproctest.Exchange, error) {
	ex := &extproctest.Exchange{
		RequestHeaders: [][2]string{{":method", "POST"}, {":path", "/v1/chat/completions"}, {"x-request-id", ""},
			{"content-type", "application/json"}},
		Metadata: map[string]string{"key_hash": "5e0d1f2b4a6c8e0f1a3b5c7d9e1f2a4b6c8d0e2f4a6b8c0d2e4f6a8b0c2d4e6f",
			"key_alias": "load", "team_id": "team-load", "user_id": "user-load", "model": "gpt-4o"},
	}
	msgs := `"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Summarise the plot of Hamlet in one paragraph."}]`
	switch shape {
	case "json":
		ex.RequestBody = []byte(`{"model":"gpt-4o",` + msgs + `}`)
		content := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 14)
		body := `{"id":"chatcmpl-load","object":"chat.completion","created":1735689600,"model":"gpt-4o-2024-08-06",` +
			`"choices":[{"index":0,"message":{"role":"assistant","content":"` + content + `","refusal":null},` +
			`"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":120,"completion_tokens":140,` +
			`"total_tokens":260,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},` +
			`"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0}},"system_fingerprint":"fp_load"}`
		ex.ResponseHeaders = [][2]string{{":status", "200"}, {"content-type", "application/json"}, {"content-length", strconv.Itoa(len(body))}}
		ex.Chunks = [][]byte{[]byte(body)}
	case "sse":
		// A stream that did not ask for usage: the sidecar buffers the
		// request body (mode_override) and injects include_usage, so the
		// last chunk carries it.
		ex.RequestBody = []byte(`{"model":"gpt-4o","stream":true,` + msgs + `}`)
		ex.ResponseHeaders = [][2]string{{":status", "200"}, {"content-type", "text/event-stream"}}
		for i := range 49 {
			ex.Chunks = append(ex.Chunks, []byte(`data: {"id":"chatcmpl-load","object":"chat.completion.chunk","created":1735689600,`+
				`"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"content":"tok`+strconv.Itoa(i)+` "},"finish_reason":null}]}`+"\n\n"))
		}
		ex.Chunks = append(ex.Chunks, []byte(`data: {"id":"chatcmpl-load","object":"chat.completion.chunk","created":1735689600,`+
			`"model":"gpt-4o-2024-08-06","choices":[],"usage":{"prompt_tokens":120,"completion_tokens":49,"total_tokens":169}}`+"\n\ndata: [DONE]\n\n"))
	default:
		return nil, fmt.Errorf("-shape %q: want json or sse", shape)
	}
	return ex, nil
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func stop(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
	}
}

// noopServer answers every message with an empty response of its kind:
// the floor any ext_proc server pays for the protocol itself.
type noopServer struct {
	extprocv3.UnimplementedExternalProcessorServer
}

var (
	nRequestHeaders  = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}}
	nRequestBody     = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}}
	nResponseHeaders = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}}
	nResponseBody    = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}}
)

func (noopServer) Process(s extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		req, err := s.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		var resp *extprocv3.ProcessingResponse
		switch req.Request.(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			resp = nRequestHeaders
		case *extprocv3.ProcessingRequest_RequestBody:
			resp = nRequestBody
		case *extprocv3.ProcessingRequest_ResponseHeaders:
			resp = nResponseHeaders
		case *extprocv3.ProcessingRequest_ResponseBody:
			resp = nResponseBody
		default:
			continue
		}
		if err := s.Send(resp); err != nil {
			return err
		}
	}
}

// serveNoop serves the no-op server with the sidecar's gRPC settings, so
// only the processing differs.
func serveNoop(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	g := grpc.NewServer(authz.ServerOptions(1 << 20)...)
	extprocv3.RegisterExternalProcessorServer(g, noopServer{})
	go func() {
		sig := make(chan os.Signal, 1)
		signalNotify(sig)
		<-sig
		g.GracefulStop()
	}()
	return g.Serve(ln)
}
