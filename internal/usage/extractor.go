package usage

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
)

// DefaultMaxBytes bounds what an Extractor buffers when NewExtractor is given 0.
const DefaultMaxBytes = 8 << 20

// Errors Write and Err report. Usage found before the error is kept.
var (
	ErrTooLarge = errors.New("usage: response larger than the configured bound")
	ErrEncoding = errors.New("usage: unsupported content-encoding")
	ErrFrame    = errors.New("usage: malformed event-stream frame")
)

type encoding uint8

const (
	encNone encoding = iota
	encGzip
	encBrotli
	encZstd
	encDeflate
	encUnknown
)

type mode uint8

const (
	modeSniff mode = iota
	modeJSON
	modeSSE
	modeEventStream
	modeSkip // body not worth reading (e.g. plain text)
)

// Extractor incrementally reads one response body (JSON, JSON array, SSE or
// Bedrock event stream; gzip/br/zstd/deflate decompressed with a bound) and
// keeps the usage. Write may be called with arbitrary chunk splits: SSE
// events, JSON values and event-stream frames split across chunks are
// reassembled. It is not safe for concurrent use. The zero value is not
// usable; use NewExtractor.
type Extractor struct {
	api      API
	maxBytes int
	enc      encoding
	mode     mode
	es       bool // content type says Bedrock event stream
	err      error
	finished bool

	raw    rawUsage
	found  bool
	model  []byte
	events int // SSE data events and JSON values read

	zbuf []byte // compressed body, decoded when the body ends

	// SSE
	line     []byte // unfinished line carried across chunks
	lineOver bool
	cr       bool // last chunk ended in '\r' (a following '\n' belongs to it)
	data     []byte
	hasData  bool
	dataOver bool

	// JSON: the current top-level value (or array element)
	depth    int
	inStr    bool
	esc      bool
	arr      bool
	inElem   bool
	elem     []byte
	elemLen  int
	elemOver bool

	// Bedrock event stream
	frame []byte
	b64   []byte

	// decoders, kept across Reset
	gz  *gzip.Reader
	br  *brotli.Reader
	zr  *zstd.Decoder
	out []byte
}

// NewExtractor returns an Extractor for one response of the given API.
// maxBytes bounds the bytes it buffers: one SSE event, one JSON value, one
// event-stream frame, a compressed body, and the decompressed size of a
// compressed body (0 means DefaultMaxBytes).
func NewExtractor(api API, contentType, contentEncoding string, maxBytes int) *Extractor {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	x := &Extractor{maxBytes: maxBytes}
	x.Reset(api, contentType, contentEncoding)
	return x
}

// Reset prepares x for another response, keeping its buffers (for pooling).
func (x *Extractor) Reset(api API, contentType, contentEncoding string) {
	const keep = 1 << 20 // do not pin big buffers in a pool
	trim := func(b []byte) []byte {
		if cap(b) > keep {
			return nil
		}
		return b[:0]
	}
	*x = Extractor{
		api: api, maxBytes: x.maxBytes,
		model: trim(x.model), zbuf: trim(x.zbuf), line: trim(x.line), data: trim(x.data),
		elem: trim(x.elem), frame: trim(x.frame), b64: trim(x.b64), out: x.out,
		gz: x.gz, br: x.br, zr: x.zr,
	}
	if x.maxBytes <= 0 {
		x.maxBytes = DefaultMaxBytes
	}
	x.enc = parseEncoding(contentEncoding)
	if x.enc == encUnknown {
		x.err = fmt.Errorf("%w: %q", ErrEncoding, contentEncoding)
	}
	ct := strings.ToLower(contentType)
	x.es = strings.Contains(ct, "application/vnd.amazon.eventstream")
}

func parseEncoding(ce string) encoding {
	switch strings.ToLower(strings.TrimSpace(ce)) {
	case "", "identity":
		return encNone
	case "gzip", "x-gzip":
		return encGzip
	case "br":
		return encBrotli
	case "zstd":
		return encZstd
	case "deflate":
		return encDeflate
	}
	return encUnknown
}

// Events is the number of SSE events with data (including a final [DONE])
// read so far, or of JSON values for a JSON body. OpenAI-style streams send
// about one output token per event, so for a stream without usage it bounds
// an estimate of the output tokens; call it after Usage.
func (x *Extractor) Events() int { return x.events }

// Err reports why reading stopped early (nil if it did not).
func (x *Extractor) Err() error { return x.err }

// Write consumes the next chunk of the response body. After an error, later
// chunks are ignored and the error is returned again.
func (x *Extractor) Write(chunk []byte) error {
	if x.err != nil || x.finished {
		return x.err
	}
	if x.enc != encNone {
		if len(x.zbuf)+len(chunk) > x.maxBytes {
			x.err = ErrTooLarge
			return x.err
		}
		x.zbuf = append(x.zbuf, chunk...)
		return nil
	}
	x.feed(chunk)
	return x.err
}

// Usage returns the usage the body carried; call it after the last chunk.
// found is false when the body had no usage (an error body, a stream whose
// request did not ask for usage, or a body cut short); u.Model is still set
// if the body named a model.
func (x *Extractor) Usage() (u Usage, found bool) {
	x.finish()
	if !x.found {
		return Usage{Model: string(x.model)}, false
	}
	u = x.raw.normalize()
	u.Model = string(x.model)
	return u, true
}

func (x *Extractor) finish() {
	if x.finished {
		return
	}
	if x.enc != encNone && x.err == nil {
		x.decode()
	}
	x.finished = true
	if x.mode == modeSSE {
		if len(x.line) > 0 || x.lineOver {
			x.sseLine(x.line, x.lineOver)
		}
		x.dispatch()
	}
}

func (x *Extractor) decode() {
	var r io.Reader
	src := bytes.NewReader(x.zbuf)
	var err error
	switch x.enc {
	case encGzip:
		if x.gz == nil {
			x.gz, err = gzip.NewReader(src)
		} else {
			err = x.gz.Reset(src)
		}
		r = x.gz
	case encDeflate:
		r, err = zlib.NewReader(src)
	case encBrotli:
		if x.br == nil {
			x.br = brotli.NewReader(src)
		} else {
			err = x.br.Reset(src)
		}
		r = x.br
	case encZstd:
		if x.zr == nil {
			x.zr, err = zstd.NewReader(src, zstd.WithDecoderConcurrency(1),
				zstd.WithDecoderMaxMemory(uint64(x.maxBytes)), zstd.WithDecoderLowmem(true))
		} else {
			err = x.zr.Reset(src)
		}
		r = x.zr
	}
	if err != nil {
		x.err = fmt.Errorf("usage: %w", err)
		return
	}
	if cap(x.out) < 32<<10 {
		x.out = make([]byte, 32<<10)
	}
	buf := x.out[:cap(x.out)]
	total := 0
	for x.err == nil {
		n, err := r.Read(buf)
		total += n
		if total > x.maxBytes {
			x.err = ErrTooLarge
			return
		}
		x.feed(buf[:n])
		if err == io.EOF {
			return
		}
		if err != nil {
			x.err = fmt.Errorf("usage: decompress: %w", err)
			return
		}
	}
}

// Close releases the zstd decoder's resources; call it when dropping a pooled
// Extractor for good. Not needed otherwise.
func (x *Extractor) Close() {
	if x.zr != nil {
		x.zr.Close()
		x.zr = nil
	}
}

func (x *Extractor) feed(p []byte) {
	if x.mode == modeSniff {
		i := 0
		for i < len(p) && (isSpace(p[i]) || p[i] == 0xEF || p[i] == 0xBB || p[i] == 0xBF) && !x.es {
			i++
		}
		if i == len(p) {
			return
		}
		p = p[i:]
		switch c := p[0]; {
		case x.es || c == 0 && (x.api == APIBedrockConverse || x.api == APIBedrockInvoke):
			x.mode = modeEventStream
		case c == '{' || c == '[':
			x.mode = modeJSON
		case c == ':' || c >= 'a' && c <= 'z':
			x.mode = modeSSE
		default:
			x.mode = modeSkip
		}
	}
	switch x.mode {
	case modeJSON:
		x.json(p)
	case modeSSE:
		x.sse(p)
	case modeEventStream:
		x.eventStream(p)
	}
}

// sse splits p into lines; complete lines are handled in place, an
// unfinished one is carried in x.line.
func (x *Extractor) sse(p []byte) {
	for len(p) > 0 {
		if x.cr {
			x.cr = false
			if p[0] == '\n' {
				p = p[1:]
				continue
			}
		}
		i := bytes.IndexByte(p, '\n')
		end := i
		if end < 0 {
			end = len(p)
		}
		if j := bytes.IndexByte(p[:end], '\r'); j >= 0 {
			i = j
		}
		if i < 0 {
			x.appendLine(p)
			return
		}
		if p[i] == '\r' {
			x.cr = true
		}
		if len(x.line) > 0 || x.lineOver {
			x.appendLine(p[:i])
			x.sseLine(x.line, x.lineOver)
			x.line, x.lineOver = x.line[:0], false
		} else {
			x.sseLine(p[:i], i > x.maxBytes)
		}
		p = p[i+1:]
	}
}

func (x *Extractor) appendLine(p []byte) {
	if x.lineOver || len(x.line)+len(p) > x.maxBytes {
		x.lineOver = true
		x.line = x.line[:0]
		return
	}
	x.line = append(x.line, p...)
}

func (x *Extractor) sseLine(line []byte, over bool) {
	if over {
		x.dataOver = true // an event too large to read: drop it whole
		return
	}
	if len(line) == 0 {
		x.dispatch()
		return
	}
	name, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		name, value = line[:i], line[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	if string(name) != "data" || x.dataOver {
		return // event:, id:, retry:, comments: usage is in the data
	}
	if len(x.data)+len(value)+1 > x.maxBytes {
		x.dataOver = true
		return
	}
	if x.hasData {
		x.data = append(x.data, '\n')
	}
	x.data = append(x.data, value...)
	x.hasData = true
}

func (x *Extractor) dispatch() {
	if x.hasData && !x.dataOver {
		x.events++
		x.value(x.data)
	}
	x.data, x.hasData, x.dataOver = x.data[:0], false, false
}

// json finds each top-level JSON value (or, in a top-level array such as a
// Gemini stream without alt=sse, each element object) and reads it when it
// closes. A value inside one chunk is read in place; one spanning chunks is
// copied, up to maxBytes.
func (x *Extractor) json(p []byte) {
	start := 0
	for i := 0; i < len(p); i++ {
		c := p[i]
		if x.inStr {
			switch {
			case x.esc:
				x.esc = false
			case c == '\\':
				x.esc = true
			case c == '"':
				x.inStr = false
			}
			continue
		}
		switch c {
		case '"':
			x.inStr = true
		case '{', '[':
			if x.depth == 0 && c == '[' {
				x.arr = true
			} else if !x.inElem && c == '{' && (x.depth == 0 || x.arr && x.depth == 1) {
				x.inElem, start, x.elemLen, x.elemOver = true, i, 0, false
				x.elem = x.elem[:0]
			}
			x.depth++
		case '}', ']':
			if x.depth > 0 {
				x.depth--
			}
			if x.depth == 0 && c == ']' {
				x.arr = false
			}
			if x.inElem && (x.depth == 0 || x.arr && x.depth == 1) {
				x.inElem = false
				part := p[start : i+1]
				x.elemLen += len(part)
				x.events++
				switch {
				case x.elemOver || x.elemLen > x.maxBytes:
				case len(x.elem) > 0:
					x.elem = append(x.elem, part...)
					x.value(x.elem)
				default:
					x.value(part)
				}
				x.elem = x.elem[:0]
			}
		}
	}
	if x.inElem {
		part := p[start:]
		x.elemLen += len(part)
		if x.elemLen > x.maxBytes {
			x.elemOver = true
			x.elem = x.elem[:0]
		} else if !x.elemOver {
			x.elem = append(x.elem, part...)
		}
	}
}

// eventStream reads Bedrock's binary event stream (application/vnd.amazon.eventstream):
// frames of total length (4), headers length (4), prelude CRC (4), headers,
// payload, message CRC (4). CRCs are not checked: the stream comes over TLS
// from the provider and the payload is only read, never trusted for more.
func (x *Extractor) eventStream(p []byte) {
	x.frame = append(x.frame, p...)
	for len(x.frame) >= 12 {
		total := int(binary.BigEndian.Uint32(x.frame[0:4]))
		hlen := int(binary.BigEndian.Uint32(x.frame[4:8]))
		if total < 16 || total > x.maxBytes || hlen > total-16 {
			x.err = ErrFrame
			x.frame = x.frame[:0]
			return
		}
		if len(x.frame) < total {
			return
		}
		x.eventMessage(x.frame[12:12+hlen], x.frame[12+hlen:total-4])
		n := copy(x.frame, x.frame[total:])
		x.frame = x.frame[:n]
	}
}

func (x *Extractor) eventMessage(headers, payload []byte) {
	var msgType, eventType []byte
	for len(headers) > 0 {
		nl := int(headers[0])
		if 1+nl+1 > len(headers) {
			return
		}
		name := headers[1 : 1+nl]
		typ := headers[1+nl]
		headers = headers[2+nl:]
		var size int
		switch typ {
		case 0, 1:
			size = 0
		case 2:
			size = 1
		case 3:
			size = 2
		case 4:
			size = 4
		case 5, 8:
			size = 8
		case 9:
			size = 16
		case 6, 7:
			if len(headers) < 2 {
				return
			}
			size = 2 + int(binary.BigEndian.Uint16(headers))
		default:
			return
		}
		if size > len(headers) {
			return
		}
		if typ == 7 {
			switch string(name) {
			case ":message-type":
				msgType = headers[2:size]
			case ":event-type":
				eventType = headers[2:size]
			}
		}
		headers = headers[size:]
	}
	if string(msgType) != "event" {
		return // exceptions carry no usage
	}
	if string(eventType) != "chunk" {
		x.value(payload) // Converse stream: the metadata event has usage
		return
	}
	// InvokeModelWithResponseStream: {"bytes":"<base64 of the model's own event>"}
	s := scan{b: payload}
	if !s.enter() {
		return
	}
	for {
		key, ok := s.member()
		if !ok {
			return
		}
		if string(key) != "bytes" {
			if !s.skip() {
				return
			}
			continue
		}
		enc, ok := s.str()
		if !ok {
			return
		}
		n := base64.StdEncoding.DecodedLen(len(enc))
		if cap(x.b64) < n {
			x.b64 = make([]byte, n)
		}
		n, err := base64.StdEncoding.Decode(x.b64[:n], enc)
		if err != nil {
			return
		}
		x.value(x.b64[:n])
		return
	}
}
