package main

import (
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestVerdictReadsEncodedResponses(t *testing.T) {
	md, _ := structpb.NewStruct(map[string]any{"key_hash": "abc"})
	tests := []struct {
		name        string
		resp        *authv3.CheckResponse
		allowed, ok bool
	}{
		{"allow with metadata first on the wire", &authv3.CheckResponse{Status: &rpcstatus.Status{}, DynamicMetadata: md,
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{HeadersToRemove: []string{"authorization"}}}}, true, true},
		{"deny", &authv3.CheckResponse{Status: &rpcstatus.Status{Code: 16},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{Body: `{"error":{}}`}}}, false, true},
		{"neither", &authv3.CheckResponse{Status: &rpcstatus.Status{Code: 7}}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := proto.Marshal(tt.resp)
			if err != nil {
				t.Fatal(err)
			}
			if allowed, ok := verdict(b); allowed != tt.allowed || ok != tt.ok {
				t.Errorf("verdict = %v, %v; want %v, %v", allowed, ok, tt.allowed, tt.ok)
			}
		})
	}
	if _, ok := verdict([]byte{0xff, 0xff, 0xff}); ok {
		t.Error("garbage classified")
	}
}
