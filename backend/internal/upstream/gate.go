// Package upstream holds what both upstream clients need on the wire:
// pacing of requests (rate limit and 429 back-off) and Retry-After parsing.
package upstream

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

const (
	defaultRetryAfter = time.Second
	maxRetryAfter     = 30 * time.Second
	// minAdaptiveRate is the floor 429s can push the limiter down to.
	minAdaptiveRate = 0.5
	// maxMessageLength bounds an upstream message carried in an error.
	maxMessageLength = 300
)

// CleanMessage keeps an upstream message to one bounded, printable line
// before it goes into an error that Vault shows and logs.
func CleanMessage(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.TrimSpace(s))
	if len(s) > maxMessageLength {
		s = s[:maxMessageLength] + "..."
	}
	return s
}

// RetryAfter reads Retry-After as seconds or an HTTP date, bounded.
func RetryAfter(h http.Header, now time.Time) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return defaultRetryAfter
	}
	var d time.Duration
	if secs, err := strconv.Atoi(v); err == nil {
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	} else {
		return defaultRetryAfter
	}
	switch {
	case d <= 0:
		return defaultRetryAfter
	case d > maxRetryAfter:
		return maxRetryAfter
	}
	return d
}

// Gate paces every attempt the client sends: a token-bucket limiter at the
// configured rate (halved by each 429, recovering by 10% per success), and
// a pause that a 429's Retry-After imposes on all requests at once, so a
// mass revocation backs off as one instead of each request on its own.
type Gate struct {
	limiter    *rate.Limiter // nil without a configured rate
	configured rate.Limit

	mu          sync.Mutex
	pausedUntil time.Time
}

func NewGate(perSecond float64) *Gate {
	g := &Gate{}
	if perSecond > 0 {
		// A small burst spreads requests evenly: a burst as large as the
		// rate would send a second's worth at once and trip the upstream's
		// own limiter.
		burst := int(math.Ceil(perSecond / 10))
		g.configured = rate.Limit(perSecond)
		g.limiter = rate.NewLimiter(g.configured, burst)
	}
	return g
}

// Wait blocks until the next attempt may go out.
func (g *Gate) Wait(ctx context.Context) error {
	g.mu.Lock()
	pause := time.Until(g.pausedUntil)
	g.mu.Unlock()
	if pause > 0 {
		t := time.NewTimer(pause)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	if g.limiter != nil {
		return g.limiter.Wait(ctx)
	}
	return nil
}

// BackOff records a 429: everyone pauses for retryAfter and the rate halves.
func (g *Gate) BackOff(retryAfter time.Duration) {
	g.mu.Lock()
	if until := time.Now().Add(retryAfter); until.After(g.pausedUntil) {
		g.pausedUntil = until
	}
	g.mu.Unlock()
	if g.limiter != nil {
		next := g.limiter.Limit() / 2
		if next < minAdaptiveRate {
			next = minAdaptiveRate
		}
		g.limiter.SetLimit(next)
	}
}

// Recover records a success: the rate climbs back toward the configured one.
func (g *Gate) Recover() {
	if g.limiter == nil {
		return
	}
	if cur := g.limiter.Limit(); cur < g.configured {
		next := cur * 1.1
		if next > g.configured {
			next = g.configured
		}
		g.limiter.SetLimit(next)
	}
}

// Transport makes every HTTP attempt, retries included, pass the gate.
type Transport struct {
	Base http.RoundTripper
	Gate *Gate
}

// RoundTrip waits at the gate, then sends.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.Gate.Wait(req.Context()); err != nil {
		return nil, err
	}
	return t.Base.RoundTrip(req)
}
