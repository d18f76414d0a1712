package ratelimit

import "sync/atomic"

// counter is one descriptor's local state. Every word packs a window start
// (seconds since the limiter's base, high 32 bits) with a count (low 32
// bits), so a window and its count change together in one CAS: no locks.
type counter struct {
	win   atomic.Uint64 // window start | requests in it
	tok   atomic.Uint64 // window start | tokens in it (saturating)
	slots atomic.Pointer[[]atomic.Uint64]
	next  atomic.Uint32 // where the next slot search starts
	gen   atomic.Uint32
	_     [24]byte // a descriptor's words on their own cache line
}

const lowMask = 1<<32 - 1

// hit counts a request at now and returns its window's start and the
// count including it, starting a new window when the last ran out
// (now - start >= window) or none was started.
func (c *counter) hit(now, window uint32) (start, n uint32) {
	for {
		old := c.win.Load()
		start, n = uint32(old>>32), uint32(old)
		if old == 0 || now-start >= window {
			start, n = now, 1
		} else if n < lowMask {
			n++
		}
		if c.win.CompareAndSwap(old, uint64(start)<<32|uint64(n)) {
			return start, n
		}
	}
}

// tokensIn returns the tokens recorded in the window that starts at start.
func (c *counter) tokensIn(start uint32) int64 {
	t := c.tok.Load()
	if uint32(t>>32) != start {
		return 0
	}
	return int64(uint32(t))
}

// addTokens adds n tokens to the current window.
func (c *counter) addTokens(n int64) {
	for {
		start := uint32(c.win.Load() >> 32)
		old := c.tok.Load()
		cur := uint64(0)
		if uint32(old>>32) == start {
			cur = old & lowMask
		}
		cur = min(cur+uint64(n), lowMask)
		if c.tok.CompareAndSwap(old, uint64(start)<<32|cur) {
			return
		}
	}
}

// Parallel slots: each is 0 (free) or expiry (ms since base, high 40 bits)
// | generation (low 24 bits). A slot whose expiry passed is free again.

func (c *counter) resize(parallel int64) {
	if parallel < 0 {
		return
	}
	n := int(min(parallel, maxSlots))
	if s := c.slots.Load(); s != nil && len(*s) == n {
		return
	}
	s := make([]atomic.Uint64, n)
	c.slots.Store(&s) // leases held in the old slots are forgotten
}

// acquire takes a free slot until expiry; ok is false when all are busy.
func (c *counter) acquire(nowMS, expiryMS int64) (slot uint32, word uint64, ok bool) {
	sp := c.slots.Load()
	if sp == nil || len(*sp) == 0 {
		return 0, 0, false
	}
	s := *sp
	word = uint64(expiryMS)<<24 | uint64(c.gen.Add(1)&(1<<24-1))
	start := int(c.next.Add(1)) % len(s)
	for i := range s {
		j := (start + i) % len(s)
		w := s[j].Load()
		if (w == 0 || int64(w>>24) <= nowMS) && s[j].CompareAndSwap(w, word) {
			return uint32(j), word, true
		}
	}
	return 0, 0, false
}

// release frees slot if it still holds the lease word.
func (c *counter) release(slot uint32, word uint64) {
	sp := c.slots.Load()
	if sp == nil || int(slot) >= len(*sp) {
		return
	}
	(*sp)[slot].CompareAndSwap(word, 0)
}
