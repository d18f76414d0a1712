package cache

import (
	"encoding/binary"
	"math/bits"
	"sync"
	"sync/atomic"
)

// filter is a Bloom filter of known token hashes: a key it does not
// contain is certainly not in the store as of the filter's last rebuild
// plus every change event since. Adds are lock-free (atomic OR) and so are
// lookups; there are no deletions (a deleted key stays in until the next
// rebuild, costing one store read that the negative cache then remembers).
//
// The token hashes are already uniform, so the bit positions come from the
// hash itself (double hashing over two 64-bit words, not the 8 bytes the
// cache slot uses), with no further hashing.
type filter struct {
	words []atomic.Uint64
	mask  uint64 // bit count - 1 (a power of two)
	n     atomic.Int64
	cap   int64 // adds past this trigger a rebuild (the false-positive rate grows)
}

const (
	filterK       = 4  // probes per key
	filterBitsKey = 16 // bits per key at build: about 0.2% false positives at k=4
	filterMinBits = 1 << 16
)

func newFilter(n int) *filter {
	m := uint64(max(n*filterBitsKey, filterMinBits))
	m = 1 << bits.Len64(m-1) // round up to a power of two
	return &filter{words: make([]atomic.Uint64, m/64), mask: m - 1, cap: int64(m / 10)}
}

func probes(h *[32]byte) (a, b uint64) {
	return binary.LittleEndian.Uint64(h[8:16]), binary.LittleEndian.Uint64(h[16:24]) | 1
}

func (f *filter) has(h *[32]byte) bool {
	a, b := probes(h)
	for i := range uint64(filterK) {
		bit := (a + i*b) & f.mask
		if f.words[bit>>6].Load()&(1<<(bit&63)) == 0 {
			return false
		}
	}
	return true
}

// add adds h and reports whether the filter is past its capacity.
func (f *filter) add(h *[32]byte) (full bool) {
	a, b := probes(h)
	for i := range uint64(filterK) {
		bit := (a + i*b) & f.mask
		f.words[bit>>6].Or(1 << (bit & 63))
	}
	return f.n.Add(1) > f.cap
}

// bytes is the filter's memory.
func (f *filter) bytes() int { return len(f.words) * 8 }

// bucket is a token bucket: rate tokens per second, up to burst. It
// budgets the store reads made for keys the filter does not know.
type bucket struct {
	mu     sync.Mutex
	rate   float64 // tokens per nanosecond
	burst  float64
	tokens float64
	last   int64 // unix ns of the last refill
}

func newBucket(perSecond, burst float64) *bucket {
	return &bucket{rate: perSecond / 1e9, burst: burst, tokens: burst}
}

// take takes one token at now (unix ns) if there is one.
func (b *bucket) take(now int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last != 0 && now > b.last {
		b.tokens = min(b.burst, b.tokens+float64(now-b.last)*b.rate)
	}
	if now > b.last {
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
