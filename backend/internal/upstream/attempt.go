package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// attemptTransport paces every attempt, retries included, through the
// gate, and only then starts that attempt's timeout, so queueing at the
// rate limiter never counts as the upstream being slow.
//
// It deliberately has no CloseIdleConnections: retryablehttp calls it after
// every failed request, which would drop the pooled connections of all
// concurrent requests. Wire.Close reaches the base transport.
type attemptTransport struct {
	base      http.RoundTripper
	gate      *Gate
	timeout   time.Duration
	userAgent string
	observer  Observer
}

// RoundTrip waits at the gate, then sends with the per-attempt timeout,
// which also covers reading the body, and the client's User-Agent.
func (t *attemptTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	queued := time.Now()
	err := t.gate.Wait(req.Context())
	if waited := time.Since(queued); waited >= time.Millisecond {
		t.observer.Waited(WaitRateLimit, waited)
	}
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, ctxErr
		}
		var paused *PausedError
		if errors.As(err, &paused) {
			return nil, err
		}
		// The limiter refuses at once a wait that would pass the deadline.
		return nil, errLimiterDeadline
	}
	ctx, cancel := context.WithTimeout(req.Context(), t.timeout)
	// Set here, on a copy, so every attempt of every request says it,
	// whichever library made the request.
	attempt := req.Clone(ctx)
	attempt.Header.Set("User-Agent", t.userAgent)
	sent := time.Now()
	resp, err := t.base.RoundTrip(attempt)
	if err != nil {
		cancel()
		t.observer.Attempted(operationOf(req.Context()), 0, time.Since(sent))
		return nil, err
	}
	t.observer.Attempted(operationOf(req.Context()), resp.StatusCode, time.Since(sent))
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// errLimiterDeadline: the client's own rate limit would hold a request
// past its deadline. Retrying cannot help.
var errLimiterDeadline = fmt.Errorf("waiting for the connection's rate_limit would pass the request's deadline (or %s); raise rate_limit or try again later: %w", maxGateWait, context.DeadlineExceeded)

// cancelOnClose releases an attempt's timeout once its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// isTimeout reports whether a request died waiting for the upstream.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// Drain reads a little of what is left of a body, so the connection can be
// reused, and closes it.
func Drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}
