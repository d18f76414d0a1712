package usage

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
)

// Case is one recorded response and the usage it carries; the pricing tests
// reuse these through testdata paths.
type extractCase struct {
	name  string
	file  string // testdata file; "" means body
	body  []byte
	api   API
	ctype string
	want  Usage
	found bool
}

func extractCases(t testing.TB) []extractCase {
	return []extractCase{
		{name: "openai chat json", file: "openai_chat.json", api: APIOpenAIChat, ctype: "application/json", found: true,
			want: Usage{Model: "gpt-4o-2024-08-06", PromptTokens: 2006, CachedReadTokens: 1920, OutputTokens: 300}},
		{name: "openai chat sse with usage", file: "openai_chat_stream.sse", api: APIOpenAIChat, ctype: "text/event-stream", found: true,
			want: Usage{Model: "o3-2025-04-16", PromptTokens: 1500, CachedReadTokens: 1024, OutputTokens: 2200, ReasoningTokens: 1792}},
		{name: "openai chat sse without usage", file: "openai_chat_stream_nousage.sse", api: APIOpenAIChat, ctype: "text/event-stream",
			want: Usage{Model: "gpt-4o-mini-2024-07-18"}},
		{name: "openai completions", file: "openai_completions.json", api: APIOpenAICompletions, ctype: "application/json", found: true,
			want: Usage{Model: "gpt-3.5-turbo-instruct", PromptTokens: 5, OutputTokens: 7}},
		{name: "openai embeddings", file: "openai_embeddings.json", api: APIOpenAIEmbeddings, ctype: "application/json", found: true,
			want: Usage{Model: "text-embedding-3-small", PromptTokens: 8}},
		{name: "openai responses json", file: "openai_responses.json", api: APIOpenAIResponses, ctype: "application/json", found: true,
			want: Usage{Model: "gpt-5-2025-08-07", PromptTokens: 36, OutputTokens: 187, ReasoningTokens: 128}},
		{name: "openai responses sse", file: "openai_responses.sse", api: APIOpenAIResponses, ctype: "text/event-stream", found: true,
			want: Usage{Model: "gpt-4.1-2025-04-14", PromptTokens: 3000, CachedReadTokens: 2048, OutputTokens: 400}},
		{name: "azure chat json", file: "azure_chat.json", api: APIOpenAIChat, ctype: "application/json", found: true,
			want: Usage{Model: "gpt-4o-mini-2024-07-18", PromptTokens: 1000, OutputTokens: 120}},
		{name: "anthropic json with cache", file: "anthropic_messages.json", api: APIAnthropicMessages, ctype: "application/json", found: true,
			want: Usage{Model: "claude-sonnet-4-5-20250929", PromptTokens: 2095 + 2051 + 10000, CachedReadTokens: 10000,
				CacheCreationTokens: 2051, CacheCreation1hTokens: 1000, OutputTokens: 503}},
		{name: "anthropic sse with cache", file: "anthropic_messages.sse", api: APIAnthropicMessages, ctype: "text/event-stream", found: true,
			want: Usage{Model: "claude-opus-4-6", PromptTokens: 472 + 1200 + 30000, CachedReadTokens: 30000,
				CacheCreationTokens: 1200, OutputTokens: 1515}},
		{name: "gemini json above 200k", file: "gemini.json", api: APIGemini, ctype: "application/json", found: true,
			want: Usage{Model: "gemini-2.5-pro", PromptTokens: 250000, CachedReadTokens: 100000, OutputTokens: 3000, ReasoningTokens: 1800}},
		{name: "gemini sse", file: "gemini_stream.sse", api: APIGemini, ctype: "text/event-stream", found: true,
			want: Usage{Model: "gemini-2.5-flash", PromptTokens: 900, AudioInputTokens: 300, OutputTokens: 225, ReasoningTokens: 150}},
		{name: "gemini json array stream", file: "gemini_stream_array.json", api: APIGemini, ctype: "application/json", found: true,
			want: Usage{Model: "gemini-2.0-flash", PromptTokens: 12, OutputTokens: 9}},
		{name: "bedrock converse", file: "bedrock_converse.json", api: APIBedrockConverse, ctype: "application/json", found: true,
			want: Usage{PromptTokens: 4620, CachedReadTokens: 4000, CacheCreationTokens: 500, OutputTokens: 340}},
		{name: "bedrock converse stream", body: converseStream(t), api: APIBedrockConverse, ctype: "application/vnd.amazon.eventstream", found: true,
			want: Usage{PromptTokens: 4620, CachedReadTokens: 4000, CacheCreationTokens: 500, OutputTokens: 340}},
		{name: "bedrock invoke claude", file: "bedrock_invoke_claude.json", api: APIBedrockInvoke, ctype: "application/json", found: true,
			want: Usage{Model: "claude-sonnet-4-5-20250929", PromptTokens: 50, OutputTokens: 25}},
		{name: "bedrock invoke stream claude", body: invokeStream(t), api: APIBedrockInvoke, ctype: "application/vnd.amazon.eventstream", found: true,
			want: Usage{Model: "claude-sonnet-4-5-20250929", PromptTokens: 300 + 700, CachedReadTokens: 700, OutputTokens: 42}},
		{name: "bedrock invoke llama", file: "bedrock_invoke_llama.json", api: APIBedrockInvoke, ctype: "application/json", found: true,
			want: Usage{PromptTokens: 21, OutputTokens: 9}},
		{name: "openai error", file: "openai_error.json", api: APIOpenAIChat, ctype: "application/json"},
		{name: "anthropic error event", file: "anthropic_error.sse", api: APIAnthropicMessages, ctype: "text/event-stream"},
		{name: "crlf sse", api: APIOpenAIChat, ctype: "text/event-stream", found: true,
			body: []byte("data: {\"model\":\"m\",\"usage\":null}\r\n\r\ndata: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\r\n\r\n"),
			want: Usage{Model: "m", PromptTokens: 3, OutputTokens: 4}},
		{name: "cr-only sse, no final blank line", api: APIOpenAIChat, ctype: "text/event-stream", found: true,
			body: []byte(": comment\rdata: {\"usage\":\rdata: {\"prompt_tokens\":3,\"completion_tokens\":4}}"),
			want: Usage{PromptTokens: 3, OutputTokens: 4}},
		{name: "plain text body", api: APIOpenAIChat, ctype: "text/plain", body: []byte("upstream connect error")},
	}
}

func (c extractCase) data(t testing.TB) []byte {
	if c.file == "" {
		return c.body
	}
	b, err := os.ReadFile(filepath.Join("testdata", c.file))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// frame builds one Bedrock event-stream message with CRCs.
func frame(eventType string, payload []byte) []byte {
	var h []byte
	for _, kv := range [][2]string{{":event-type", eventType}, {":content-type", "application/json"}, {":message-type", "event"}} {
		h = append(h, byte(len(kv[0])))
		h = append(h, kv[0]...)
		h = append(h, 7)
		h = binary.BigEndian.AppendUint16(h, uint16(len(kv[1])))
		h = append(h, kv[1]...)
	}
	total := 12 + len(h) + len(payload) + 4
	m := binary.BigEndian.AppendUint32(nil, uint32(total))
	m = binary.BigEndian.AppendUint32(m, uint32(len(h)))
	m = binary.BigEndian.AppendUint32(m, crc32.ChecksumIEEE(m))
	m = append(m, h...)
	m = append(m, payload...)
	return binary.BigEndian.AppendUint32(m, crc32.ChecksumIEEE(m))
}

func converseStream(testing.TB) []byte {
	var b []byte
	b = append(b, frame("messageStart", []byte(`{"role":"assistant"}`))...)
	b = append(b, frame("contentBlockDelta", []byte(`{"contentBlockIndex":0,"delta":{"text":"Hello \"usage\":{\"inputTokens\":9}"}}`))...)
	b = append(b, frame("messageStop", []byte(`{"stopReason":"end_turn"}`))...)
	b = append(b, frame("metadata", []byte(`{"metrics":{"latencyMs":812},"usage":{"cacheReadInputTokens":4000,"cacheWriteInputTokens":500,"inputTokens":120,"outputTokens":340,"totalTokens":4960}}`))...)
	return b
}

func invokeStream(testing.TB) []byte {
	chunk := func(event string) []byte {
		return frame("chunk", []byte(`{"bytes":"`+base64.StdEncoding.EncodeToString([]byte(event))+`","p":"abcd"}`))
	}
	var b []byte
	b = append(b, chunk(`{"type":"message_start","message":{"model":"claude-sonnet-4-5-20250929","usage":{"input_tokens":300,"cache_read_input_tokens":700,"cache_creation_input_tokens":0,"output_tokens":1}}}`)...)
	b = append(b, chunk(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}`)...)
	b = append(b, chunk(`{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":42}}`)...)
	b = append(b, chunk(`{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":300,"outputTokenCount":42,"invocationLatency":900,"firstByteLatency":300,"cacheReadInputTokenCount":700,"cacheWriteInputTokenCount":0}}`)...)
	return b
}

func run(t testing.TB, c extractCase, enc string, body []byte, splits func([]byte) [][]byte) (Usage, bool) {
	t.Helper()
	x := NewExtractor(c.api, c.ctype, enc, 0)
	for _, p := range splits(body) {
		if err := x.Write(p); err != nil {
			t.Fatalf("Write: %v", err)
		}
	}
	u, ok := x.Usage()
	if err := x.Err(); err != nil {
		t.Fatalf("Err: %v", err)
	}
	return u, ok
}

func whole(b []byte) [][]byte { return [][]byte{b} }

func bytewise(b []byte) [][]byte {
	out := make([][]byte, len(b))
	for i := range b {
		out[i] = b[i : i+1 : i+1]
	}
	return out
}

func randomSplits(seed uint64) func([]byte) [][]byte {
	return func(b []byte) [][]byte {
		r := rand.New(rand.NewPCG(seed, 1))
		var out [][]byte
		for len(b) > 0 {
			n := min(1+r.IntN(64), len(b))
			out = append(out, b[:n])
			b = b[n:]
		}
		return out
	}
}

func compress(t testing.TB, enc string, b []byte) []byte {
	var buf bytes.Buffer
	switch enc {
	case "gzip":
		w := gzip.NewWriter(&buf)
		w.Write(b)
		w.Close()
	case "deflate":
		w := zlib.NewWriter(&buf)
		w.Write(b)
		w.Close()
	case "br":
		w := brotli.NewWriter(&buf)
		w.Write(b)
		w.Close()
	case "zstd":
		w, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
		w.Close()
	default:
		return b
	}
	return buf.Bytes()
}

func TestExtract(t *testing.T) {
	t.Parallel()
	for _, c := range extractCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			body := c.data(t)
			for _, enc := range []string{"", "gzip", "br", "zstd", "deflate"} {
				splits := map[string]func([]byte) [][]byte{"whole": whole, "random1": randomSplits(1)}
				if enc == "" { // compressed bodies are buffered whole: splits matter before decoding only
					splits["bytewise"], splits["random2"] = bytewise, randomSplits(2)
				}
				for name, split := range splits {
					u, ok := run(t, c, enc, compress(t, enc, body), split)
					if u != c.want || ok != c.found {
						t.Errorf("enc %q split %s: got %+v found=%v, want %+v found=%v", enc, name, u, ok, c.want, c.found)
					}
				}
			}
		})
	}
}

func TestEventsOfStreamWithoutUsage(t *testing.T) {
	t.Parallel()
	body, err := os.ReadFile("testdata/openai_chat_stream_nousage.sse")
	if err != nil {
		t.Fatal(err)
	}
	x := NewExtractor(APIOpenAIChat, "text/event-stream", "", 0)
	for _, p := range bytewise(body) {
		_ = x.Write(p)
	}
	if _, ok := x.Usage(); ok || x.Events() != 4 {
		t.Errorf("found=%v events=%d, want no usage and 4 events (3 chunks and [DONE])", ok, x.Events())
	}
}

func TestExtractorPooled(t *testing.T) {
	t.Parallel()
	// One Extractor, Reset between responses of every shape and encoding,
	// gives the same answers as fresh ones: no state leaks across Reset.
	x := NewExtractor(APIUnknown, "", "", 0)
	defer x.Close()
	for range 2 {
		for _, c := range extractCases(t) {
			for _, enc := range []string{"", "gzip", "zstd", "br"} {
				x.Reset(c.api, c.ctype, enc)
				if err := x.Write(compress(t, enc, c.data(t))); err != nil {
					t.Fatal(err)
				}
				if u, ok := x.Usage(); u != c.want || ok != c.found {
					t.Errorf("%s %q: got %+v %v, want %+v %v", c.name, enc, u, ok, c.want, c.found)
				}
			}
		}
	}
}

func TestExtractorErrors(t *testing.T) {
	t.Parallel()
	chat, err := os.ReadFile("testdata/openai_chat.json")
	if err != nil {
		t.Fatal(err)
	}
	bomb := compress(t, "gzip", bytes.Repeat([]byte(" "), 1<<20)) // 1 MiB of spaces, ~1 KiB gzipped
	tests := []struct {
		name    string
		enc     string
		ctype   string
		max     int
		body    []byte
		wantErr error
	}{
		{name: "unknown encoding", enc: "compress", body: chat, wantErr: ErrEncoding},
		{name: "compressed body over the bound", enc: "gzip", max: 64, body: compress(t, "gzip", chat), wantErr: ErrTooLarge},
		{name: "decompression bomb", enc: "gzip", max: 64 << 10, body: bomb, wantErr: ErrTooLarge},
		{name: "corrupt gzip", enc: "gzip", body: []byte("\x1f\x8b\x08\x00garbage-garbage")},
		{name: "truncated zstd", enc: "zstd", body: compress(t, "zstd", chat)[:20]},
		{name: "bad frame length", ctype: "application/vnd.amazon.eventstream", body: []byte{0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 1}, wantErr: ErrFrame},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			x := NewExtractor(APIOpenAIChat, tt.ctype, tt.enc, tt.max)
			_ = x.Write(tt.body)
			u, ok := x.Usage()
			if ok || u.PromptTokens != 0 {
				t.Errorf("got usage %+v from a bad body", u)
			}
			if x.Err() == nil {
				t.Fatal("Err() = nil, want an error")
			}
			if tt.wantErr != nil && !errors.Is(x.Err(), tt.wantErr) {
				t.Errorf("Err() = %v, want %v", x.Err(), tt.wantErr)
			}
		})
	}
}

func TestExtractorBoundDropsOversizedEvent(t *testing.T) {
	t.Parallel()
	big := `data: {"usage":{"prompt_tokens":1000,"completion_tokens":1},"pad":"` + string(bytes.Repeat([]byte("x"), 200)) + "\"}\n\n"
	small := "data: {\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}\n\n"
	for _, split := range []func([]byte) [][]byte{whole, bytewise} {
		x := NewExtractor(APIOpenAIChat, "text/event-stream", "", 100)
		for _, p := range split([]byte(small + big)) {
			_ = x.Write(p)
		}
		if u, ok := x.Usage(); !ok || u.PromptTokens != 7 || u.OutputTokens != 2 {
			t.Errorf("got %+v %v: the oversized event must be dropped, the earlier one kept", u, ok)
		}
	}
}

func TestUsageClampsParts(t *testing.T) {
	t.Parallel()
	x := NewExtractor(APIOpenAIChat, "application/json", "", 0)
	_ = x.Write([]byte(`{"usage":{"prompt_tokens":10,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":50,"audio_tokens":9},"completion_tokens_details":{"reasoning_tokens":99,"audio_tokens":3}}}`))
	u, _ := x.Usage()
	want := Usage{PromptTokens: 10, CachedReadTokens: 10, OutputTokens: 5, ReasoningTokens: 5}
	if u != want {
		t.Errorf("got %+v, want %+v", u, want)
	}
}

func TestCumulativeCountsKeepTheLargest(t *testing.T) {
	t.Parallel()
	body := "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-x\",\"usage\":{\"input_tokens\":40,\"cache_read_input_tokens\":100,\"output_tokens\":1}}}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":77}}\n\n"
	x := NewExtractor(APIAnthropicMessages, "text/event-stream", "", 0)
	_ = x.Write([]byte(body))
	u, ok := x.Usage()
	want := Usage{Model: "claude-x", PromptTokens: 140, CachedReadTokens: 100, OutputTokens: 77}
	if !ok || u != want {
		t.Errorf("got %+v %v, want %+v", u, ok, want)
	}
	if x.Events() != 2 {
		t.Errorf("Events() = %d, want 2", x.Events())
	}
}
