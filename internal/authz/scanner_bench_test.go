package authz_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
)

// chatBodyOfSize is an openai-python chat request ("messages" before
// "model") of about n bytes: many turns of prose with escapes.
func chatBodyOfSize(n int) []byte {
	turn := `{"role":"user","content":"` + strings.Repeat(`Summarise the \"plot\" of Hamlet, naming who dies and how.\n `, 16) + `"},`
	var b strings.Builder
	b.WriteString(`{"messages":[`)
	for b.Len() < n-len(turn)-64 {
		b.WriteString(turn)
	}
	b.WriteString(`{"role":"user","content":"end"}],"model":"gpt-4o","stream":true}`)
	return []byte(b.String())
}

// BenchmarkCheckBodySize measures what the Check costs per MB of body (the
// handler, cache hit, allowed): the scanner reads the whole body, to find
// every "model" and to know it is complete. The 1 KiB case is the floor in
// the same run; docs/benchmarks.md reports (ns(size) - ns(floor)) / MB.
func BenchmarkCheckBodySize(b *testing.B) {
	srv, c, raw := benchServer(b)
	for _, size := range []int{1 << 10, 64 << 10, 1 << 20, 4 << 20} {
		r := benchRequest(raw)
		r.Attributes.Request.Http.RawBody = chatBodyOfSize(size)
		if resp, _ := srv.Check(context.Background(), r); resp.GetOkResponse() == nil {
			b.Fatalf("size %d denied: %v", size, resp.GetDeniedResponse().GetBody())
		}
		c.Wait()
		b.Run(strconv.Itoa(size>>10)+"KiB", func(b *testing.B) {
			b.SetBytes(int64(len(r.Attributes.Request.Http.RawBody)))
			b.ReportAllocs()
			for b.Loop() {
				if resp, _ := srv.Check(context.Background(), r); resp.GetOkResponse() == nil {
					b.Fatal("denied")
				}
			}
		})
	}
}
