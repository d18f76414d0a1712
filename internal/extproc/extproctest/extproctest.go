// Package extproctest drives an ext_proc server exactly as Envoy does for
// one HTTP request: one gRPC stream carrying the request headers (with the
// ext_authz dynamic metadata), the request body, the response headers and
// the response body chunks, each answered before the next is sent. Tests
// and the load tool (cmd/loadgen -mode extproc) use it.
package extproctest

import (
	"context"
	"fmt"
	"io"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// Exchange is one HTTP request and its response as Envoy sees them.
type Exchange struct {
	// RequestHeaders, in order (pseudo-headers included). Values go in
	// raw_value unless LegacyValues is set (older Envoy: value).
	RequestHeaders [][2]string
	LegacyValues   bool
	// Metadata is the ext_authz dynamic metadata (namespace
	// envoy.filters.http.ext_authz); nil sends none.
	Metadata map[string]string
	// RequestBody is sent when the server asks for it (mode_override to
	// BUFFERED_PARTIAL) or when AlwaysSendBody is set; nil sends none.
	RequestBody    []byte
	AlwaysSendBody bool
	// ResponseHeaders (":status" included) and the response body chunks;
	// the last chunk carries end_of_stream. No chunks: the headers end the
	// stream.
	ResponseHeaders [][2]string
	Chunks          [][]byte
	// Observability sets observability_mode: nothing is awaited.
	Observability bool
	// CutAfter, when > 0, ends the stream (client cancel) after that many
	// response chunks.
	CutAfter int
	// NoEndOfStream sends the last chunk without end_of_stream and then
	// closes the stream, as Envoy does for a response that ends with
	// trailers the filter skips.
	NoEndOfStream bool
}

// Result is what the server answered.
type Result struct {
	// BodyMutation is the request body the server substituted (nil if none).
	BodyMutation []byte
	// BufferedBody reports the server asked for the request body.
	BufferedBody bool
}

// Drive runs ex over one new stream of c.
func Drive(ctx context.Context, c extprocv3.ExternalProcessorClient, ex *Exchange) (Result, error) {
	var res Result
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := c.Process(ctx)
	if err != nil {
		return res, fmt.Errorf("open stream: %w", err)
	}
	send := func(req *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
		req.ObservabilityMode = ex.Observability
		if err := s.Send(req); err != nil {
			return nil, fmt.Errorf("send: %w", err)
		}
		if ex.Observability {
			return nil, nil
		}
		resp, err := s.Recv()
		if err != nil {
			return nil, fmt.Errorf("recv: %w", err)
		}
		return resp, nil
	}
	reqHeaders := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
		Headers: headerMap(ex.RequestHeaders, ex.LegacyValues), EndOfStream: ex.RequestBody == nil,
	}}}
	if ex.Metadata != nil {
		f := map[string]*structpb.Value{}
		for k, v := range ex.Metadata {
			f[k] = structpb.NewStringValue(v)
		}
		reqHeaders.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
			"envoy.filters.http.ext_authz": {Fields: f},
		}}
	}
	resp, err := send(reqHeaders)
	if err != nil {
		return res, err
	}
	if resp != nil && resp.GetRequestHeaders() == nil {
		return res, fmt.Errorf("request headers answered with %T", resp.Response)
	}
	if mo := resp.GetModeOverride(); mo != nil && strings.HasPrefix(mo.GetRequestBodyMode().String(), "BUFFERED") {
		res.BufferedBody = true
	}
	if ex.RequestBody != nil && (res.BufferedBody || ex.AlwaysSendBody) {
		resp, err := send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{
			Body: ex.RequestBody, EndOfStream: true,
		}}})
		if err != nil {
			return res, err
		}
		if resp != nil && resp.GetRequestBody() == nil {
			return res, fmt.Errorf("request body answered with %T", resp.Response)
		}
		res.BodyMutation = resp.GetRequestBody().GetResponse().GetBodyMutation().GetBody()
	}
	resp, err = send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
		Headers: headerMap(ex.ResponseHeaders, ex.LegacyValues), EndOfStream: len(ex.Chunks) == 0,
	}}})
	if err != nil {
		return res, err
	}
	if resp != nil && resp.GetResponseHeaders() == nil {
		return res, fmt.Errorf("response headers answered with %T", resp.Response)
	}
	body := &extprocv3.HttpBody{}
	req := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: body}}
	for i, c := range ex.Chunks {
		if ex.CutAfter > 0 && i == ex.CutAfter {
			cancel()
			return res, nil
		}
		body.Body, body.EndOfStream = c, i == len(ex.Chunks)-1 && !ex.NoEndOfStream
		resp, err := send(req)
		if err != nil {
			return res, err
		}
		if resp != nil && resp.GetResponseBody() == nil {
			return res, fmt.Errorf("response body answered with %T", resp.Response)
		}
	}
	if err := s.CloseSend(); err != nil {
		return res, fmt.Errorf("close send: %w", err)
	}
	// Envoy ends the stream; wait for the server to end it too, so a
	// caller that checks the server's effects sees them.
	if _, err := s.Recv(); err != io.EOF {
		return res, fmt.Errorf("stream end: %v", err)
	}
	return res, nil
}

func headerMap(hs [][2]string, legacy bool) *corev3.HeaderMap {
	m := &corev3.HeaderMap{}
	for _, h := range hs {
		hv := &corev3.HeaderValue{Key: h[0]}
		if legacy {
			hv.Value = h[1]
		} else {
			hv.RawValue = []byte(h[1])
		}
		m.Headers = append(m.Headers, hv)
	}
	return m
}

// Split cuts b into chunks of at most n bytes (the last may be shorter).
func Split(b []byte, n int) [][]byte {
	var out [][]byte
	for len(b) > n {
		out = append(out, b[:n])
		b = b[n:]
	}
	return append(out, b)
}
