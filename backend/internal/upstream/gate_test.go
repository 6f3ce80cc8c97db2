package upstream

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestGateBackOffPausesEveryone(t *testing.T) {
	g := NewGate(100)
	g.BackOff(300 * time.Millisecond)
	if got := g.limiter.Limit(); got != 50 {
		t.Fatalf("limit after a 429 = %v, want 50", got)
	}
	start := time.Now()
	if err := g.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("Wait returned after %s, inside the 300ms pause", d)
	}
	for i := 0; i < 100; i++ {
		g.Recover()
	}
	if got := g.limiter.Limit(); got != 100 {
		t.Fatalf("limit did not recover to the configured rate: %v", got)
	}
}

// A pause that would outlast the request's deadline fails the request at
// once, as the rate limiter does, rather than at the deadline.
func TestGatePausePastTheDeadlineFailsAtOnce(t *testing.T) {
	g := NewGate(0)
	g.BackOff(time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	err := g.Wait(ctx)
	var paused *PausedError
	if !errors.As(err, &paused) || !errors.Is(err, errLimiterDeadline) {
		t.Fatalf("Wait past the deadline: %v, want a *PausedError that is errLimiterDeadline", err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("Wait failed after %s, not at once", d)
	}
	if !NeverSent(err) {
		t.Fatal("a request held at the gate counts as sent")
	}
}

// Without a deadline (Vault passes none to a plugin) a wait at the rate
// limiter is bounded by maxGateWait: one that would be longer fails at once.
func TestGateWaitWithoutADeadlineIsBounded(t *testing.T) {
	g := NewGate(0.0001)
	if err := g.Wait(context.Background()); err != nil {
		t.Fatalf("the first request of the burst: %v", err)
	}
	start := time.Now()
	if err := g.Wait(context.Background()); err == nil {
		t.Fatal("a wait of hours at the rate limiter was allowed")
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("the refused wait took %s, not at once", d)
	}
}
