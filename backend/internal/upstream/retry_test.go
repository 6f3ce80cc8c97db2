package upstream

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		retryAfter string
		attempt    int
		min, max   time.Duration
	}{
		{"exponential, first", 500, "", 0, retryWaitMin / 2, retryWaitMin},
		{"exponential, third", 502, "", 2, 2 * retryWaitMin, 4 * retryWaitMin},
		{"exponential, capped", 500, "", 30, retryWaitMax / 2, retryWaitMax},
		{"503 Retry-After seconds", 503, "2", 0, 2 * time.Second, 2 * time.Second},
		{"503 Retry-After capped", 503, "3600", 0, 30 * time.Second, 30 * time.Second},
		{"503 Retry-After date", 503, time.Now().Add(5 * time.Second).UTC().Format(http.TimeFormat), 0, 3 * time.Second, 5 * time.Second},
		{"503 without Retry-After", 503, "", 0, retryWaitMin / 2, retryWaitMin},
		{"500 Retry-After ignored", 500, "20", 0, retryWaitMin / 2, retryWaitMin},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := &http.Response{StatusCode: tc.status, Header: http.Header{}}
			if tc.retryAfter != "" {
				resp.Header.Set("Retry-After", tc.retryAfter)
			}
			for range 20 { // jitter
				if got := backoff(retryWaitMin, retryWaitMax, tc.attempt, resp); got < tc.min || got > tc.max {
					t.Fatalf("backoff = %s, want within [%s, %s]", got, tc.min, tc.max)
				}
			}
		})
	}
}

func TestRetryPolicies(t *testing.T) {
	dial := &url.Error{Op: "Post", URL: "http://x", Err: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}}
	reset := &url.Error{Op: "Post", URL: "http://x", Err: &net.OpError{Op: "read", Err: syscall.ECONNRESET}}
	timeout := &url.Error{Op: "Post", URL: "http://x", Err: context.DeadlineExceeded}
	limiter := &url.Error{Op: "Post", URL: "http://x", Err: errLimiterDeadline}
	status := func(code int) *http.Response { return &http.Response{StatusCode: code} }
	tests := []struct {
		name           string
		resp           *http.Response
		err            error
		wantIdempotent bool
		wantCreate     bool
		wantNeverSent  bool
	}{
		{"200", status(200), nil, false, false, false},
		{"404", status(404), nil, false, false, false},
		{"429 goes to the outer loop", status(429), nil, false, false, false},
		{"500", status(500), nil, true, false, false},
		{"501", status(501), nil, false, false, false},
		{"502", status(502), nil, true, false, false},
		{"503 may follow a create that happened", status(503), nil, true, false, false},
		{"dial error", nil, dial, true, true, true},
		{"reset after sending", nil, reset, true, false, false},
		{"attempt timeout", nil, timeout, true, false, false},
		{"limiter deadline", nil, limiter, false, false, true},
		{"EOF", nil, io.ErrUnexpectedEOF, true, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := retryIdempotent(context.Background(), tc.resp, tc.err); got != tc.wantIdempotent {
				t.Errorf("retryIdempotent = %v", got)
			}
			if got, _ := retryCreate(context.Background(), tc.resp, tc.err); got != tc.wantCreate {
				t.Errorf("retryCreate = %v", got)
			}
			if tc.err != nil {
				if got := NeverSent(tc.err); got != tc.wantNeverSent {
					t.Errorf("NeverSent = %v", got)
				}
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for name, policy := range map[string]func(context.Context, *http.Response, error) (bool, error){"idempotent": retryIdempotent, "create": retryCreate} {
		if retry, err := policy(ctx, nil, dial); retry || !errors.Is(err, context.Canceled) {
			t.Errorf("%s retries after ctx is done: %v, %v", name, retry, err)
		}
	}
}

func TestPause(t *testing.T) {
	w, err := NewWire(Options{Platform: "test"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		attempt  int
		cancel   bool
		min, max time.Duration
		wantErr  error
	}{
		{"first retry", 0, false, retryWaitMin / 2, retryWaitMin + 50*time.Millisecond, nil},
		{"second retry waits longer", 1, false, retryWaitMin, 2*retryWaitMin + 50*time.Millisecond, nil},
		{"ctx done", 30, true, 0, 50 * time.Millisecond, context.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			if tc.cancel {
				cancel()
			}
			defer cancel()
			start := time.Now()
			err := w.Pause(ctx, tc.attempt)
			if d := time.Since(start); d < tc.min || d > tc.max || !errors.Is(err, tc.wantErr) {
				t.Fatalf("Pause took %s (want %s..%s), err %v (want %v)", d, tc.min, tc.max, err, tc.wantErr)
			}
		})
	}
}
