// Package upstream is the wire layer both upstream clients share: pacing
// (gate.go), timed attempts (attempt.go), retries and the 429 loop
// (retry.go), error answers (errors.go) and message redaction (redact.go).
// The clients keep only what is their platform's: endpoints, JSON shapes,
// authentication and the wording of their own Error types.
package upstream

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// minAdaptiveRate is the floor 429s can push the limiter down to.
const minAdaptiveRate = 0.5

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

// maxGateWait bounds a wait at the gate for a request whose context has no
// deadline, as Vault's requests reach a plugin: Vault keeps its request
// limit (90 s) to itself, and a client (the CLI gives up after 60 s) would
// otherwise see only its own timeout. It is the cap on a 429's Retry-After.
const maxGateWait = maxRetryAfter

// Wait blocks until the next attempt may go out. A wait that would pass
// the request's deadline, or maxGateWait without one, fails at once.
func (g *Gate) Wait(ctx context.Context) error {
	g.mu.Lock()
	pause := time.Until(g.pausedUntil)
	g.mu.Unlock()
	if pause <= 0 && g.limiter == nil {
		return nil // nothing to wait for: the common case costs nothing
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, maxGateWait)
		defer cancel()
	}
	if pause > 0 {
		if deadline, ok := ctx.Deadline(); ok && time.Now().Add(pause).After(deadline) {
			return &PausedError{Until: time.Now().Add(pause)}
		}
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

// PausedError: a 429's Retry-After pauses every request of the client
// until Until, past this request's deadline, so waiting cannot help it; the
// request fails at once, never sent, instead of at its deadline.
type PausedError struct{ Until time.Time }

func (e *PausedError) Error() string {
	return fmt.Sprintf("the upstream asked (429 Retry-After) to pause every request until %s, past this request's deadline", e.Until.UTC().Format(time.RFC3339))
}

func (e *PausedError) Unwrap() error { return errLimiterDeadline }

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
