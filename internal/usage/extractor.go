package usage

// Extractor incrementally reads one response body (JSON or SSE; gzip/br/zstd
// decompressed with a bound) and keeps the usage. Write may be called with
// arbitrary chunk splits. The zero value is not usable; use NewExtractor.
type Extractor struct {
	api      API
	maxBytes int
	u        Usage
	found    bool
}

// NewExtractor returns an Extractor for one response of the given API.
// maxBytes bounds the decompressed bytes read (0 means a default of 16 MiB).
func NewExtractor(api API, contentType, contentEncoding string, maxBytes int) *Extractor {
	x := &Extractor{maxBytes: maxBytes}
	x.Reset(api, contentType, contentEncoding)
	return x
}

// Write consumes the next chunk of the response body.
func (x *Extractor) Write(chunk []byte) error { return nil } // TODO

// Usage returns the usage read so far; call it after the last chunk.
func (x *Extractor) Usage() (u Usage, found bool) { return x.u, x.found }

// Reset prepares x for another response, keeping its buffers (for pooling).
func (x *Extractor) Reset(api API, contentType, contentEncoding string) {
	x.api = api
	x.u = Usage{}
	x.found = false
}
