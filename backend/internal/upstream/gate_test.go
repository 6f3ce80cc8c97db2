package upstream

import (
	"context"
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
