package upstream

import (
	"context"
	"net/http"
	"testing"
	"time"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		header string
		want   time.Duration
	}{
		{"", time.Second},
		{"3", 3 * time.Second},
		{"0", time.Second},
		{"-4", time.Second},
		{"3600", 30 * time.Second},
		{"soon", time.Second},
		{now.Add(5 * time.Second).Format(http.TimeFormat), 5 * time.Second},
	}
	for _, tc := range tests {
		h := http.Header{}
		if tc.header != "" {
			h.Set("Retry-After", tc.header)
		}
		if got := RetryAfter(h, now); got != tc.want {
			t.Errorf("RetryAfter(%q) = %s, want %s", tc.header, got, tc.want)
		}
	}
}

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

func TestCleanMessage(t *testing.T) {
	if got := CleanMessage(" a\nb\x00c "); got != "a b c" {
		t.Fatalf("CleanMessage = %q", got)
	}
	long := make([]byte, 1000)
	for i := range long {
		long[i] = 'x'
	}
	if got := CleanMessage(string(long)); len(got) != maxMessageLength+3 {
		t.Fatalf("long message not cut: %d", len(got))
	}
}
