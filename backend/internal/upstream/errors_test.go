package upstream

import (
	"io"
	"net/http"
	"strings"
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

func TestSentinels(t *testing.T) {
	s := NewSentinels("carbon")
	other := NewSentinels("other")
	tests := []struct {
		status int
		target error
		want   bool
	}{
		{http.StatusNotFound, s.NotFound, true},
		{http.StatusUnauthorized, s.Unauthorized, true},
		{http.StatusForbidden, s.Forbidden, true},
		{http.StatusTooManyRequests, s.RateLimited, true},
		{http.StatusNotFound, s.Forbidden, false},
		{http.StatusNotFound, other.NotFound, false},
		{http.StatusBadRequest, s.NotFound, false},
		{http.StatusBadRequest, nil, false},
	}
	for _, tc := range tests {
		if got := s.Is(tc.status, tc.target); got != tc.want {
			t.Errorf("Is(%d, %v) = %v, want %v", tc.status, tc.target, got, tc.want)
		}
	}
	if got := s.NotFound.Error(); got != "carbon: not found" {
		t.Errorf("NotFound says %q", got)
	}
}

// closeRecorder notes whether a body was closed.
type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

func TestReadErrorBody(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		wantLen int
	}{
		{"small", `{"message":"x"}`, 15},
		{"bounded", strings.Repeat("x", 2*maxErrorBody), maxErrorBody},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := &closeRecorder{Reader: strings.NewReader(tc.body)}
			got := ReadErrorBody(&http.Response{Body: body})
			if len(got) != tc.wantLen || !body.closed {
				t.Fatalf("read %d bytes (closed: %v), want %d and closed", len(got), body.closed, tc.wantLen)
			}
		})
	}
}
