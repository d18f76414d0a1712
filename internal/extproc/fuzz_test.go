package extproc

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/virtualkeys/sidecar/internal/pricing"
	"github.com/virtualkeys/sidecar/internal/spend"
)

type checkAcct struct{ t *testing.T }

func (a checkAcct) Record(r *spend.Record) {
	if r.Cost < 0 || r.Cost != r.Cost || r.PromptTokens < 0 || r.CompletionTokens < 0 {
		a.t.Fatalf("bad record %+v", r)
	}
}

// FuzzStream: any header values, metadata, status and body bytes, split
// anywhere, give an answer to every message and a sane record, never a
// panic.
func FuzzStream(f *testing.F) {
	f.Add("POST", "/v1/chat/completions", "gpt-4o", "200", "application/json", "", []byte(`{"model":"gpt-4o","usage":{"prompt_tokens":3,"completion_tokens":4}}`), []byte(`{"stream":true}`), uint8(5))
	f.Add("POST", "/v1/messages", "", "200", "text/event-stream", "", []byte("event: message_start\ndata: {\"message\":{\"usage\":{\"input_tokens\":5}}}\n\n"), []byte(nil), uint8(1))
	f.Add("POST", "/v1beta/models/gemini-2.5-pro:streamGenerateContent", "x", "abc", "text/event-stream", "gzip", []byte("\x1f\x8b garbage"), []byte("{"), uint8(0))
	f.Add("GET", "", "", "500", "", "br", []byte{}, []byte{}, uint8(3))
	pricer := tablePrices{pricing.Default()}
	f.Fuzz(func(t *testing.T, method, path, model, status, ctype, cenc string, body, reqBody []byte, split uint8) {
		s, err := New(Config{Accountant: checkAcct{t}, Prices: pricer, InjectIncludeUsage: true, UnknownModelCostPerToken: 1e-6})
		if err != nil {
			t.Fatal(err)
		}
		st := &stream{}
		md := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{AuthzNamespace: {Fields: map[string]*structpb.Value{
			"key_hash": structpb.NewStringValue("h"), "model": structpb.NewStringValue(model)}}}}
		msgs := []*extprocv3.ProcessingRequest{
			{MetadataContext: md, Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				{Key: ":method", RawValue: []byte(method)}, {Key: ":path", Value: path}}}}}},
			{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: reqBody, EndOfStream: true}}},
			{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				{Key: ":status", RawValue: []byte(status)}, {Key: "content-type", RawValue: []byte(ctype)}, {Key: "content-encoding", RawValue: []byte(cenc)}}}}}},
		}
		n := int(split)%8 + 1
		for i := 0; i < n; i++ {
			lo, hi := len(body)*i/n, len(body)*(i+1)/n
			msgs = append(msgs, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{
				Body: body[lo:hi], EndOfStream: i == n-1}}})
		}
		for _, m := range msgs {
			if s.handle(st, m) == nil {
				t.Fatalf("no answer to %T", m.Request)
			}
		}
		if !st.done {
			t.Fatal("response not finished after end_of_stream")
		}
		s.ended(t.Context(), st) // a second end is a no-op
	})
}

// TestPartialBodyNotMutated: a request body larger than Envoy's buffer
// (BUFFERED_PARTIAL sends a part without end_of_stream) passes unchanged.
func TestPartialBodyNotMutated(t *testing.T) {
	s, err := New(Config{Accountant: checkAcct{t}, Prices: tablePrices{pricing.Default()}, InjectIncludeUsage: true})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"model":"gpt-4o","stream":true,"messages":[]}`)
	for _, eos := range []bool{false, true} {
		resp := s.requestBody(&stream{}, &extprocv3.HttpBody{Body: body, EndOfStream: eos})
		mutated := resp.GetRequestBody().GetResponse().GetBodyMutation() != nil
		if mutated != eos {
			t.Errorf("end_of_stream %v: mutated %v", eos, mutated)
		}
	}
}
