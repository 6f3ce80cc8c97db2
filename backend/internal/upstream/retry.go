package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

const (
	retryWaitMin = 100 * time.Millisecond
	retryWaitMax = 10 * time.Second
)

// retryIdempotent retries network errors and 5xx (but 501). A 429 is
// handed back to Wire.Send, which waits it out without counting it
// against MaxRetries.
func retryIdempotent(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if errors.Is(err, errLimiterDeadline) {
		return false, nil
	}
	if err == nil && resp.StatusCode == http.StatusTooManyRequests {
		return false, nil
	}
	return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
}

// retryCreate retries a POST only when the upstream provably did not act on
// it: the request never left (NeverSent). Any answer or failure after it
// was sent, 503 and timeouts included, may follow a create that happened:
// retrying it blindly could create the resource twice, so the client
// resolves those by looking the resource up. 429s go back to Wire.Send.
func retryCreate(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	// Not after errLimiterDeadline: the deadline would hold again.
	return err != nil && dialFailed(err), nil
}

// NeverSent reports whether a request failed before the upstream could
// have seen it: the connection was never made, or the client's own rate
// limit held it back.
func NeverSent(err error) bool {
	return errors.Is(err, errLimiterDeadline) || dialFailed(err)
}

func dialFailed(err error) bool {
	var opErr *net.OpError
	return errors.As(err, &opErr) && opErr.Op == "dial"
}

// Pause waits before the next try of a request that the client retries by
// itself, outside retryablehttp (attempt counts from 0), with the same
// jittered exponential backoff. It returns early with ctx's error.
func (w *Wire) Pause(ctx context.Context, attempt int) error {
	timer := time.NewTimer(backoff(retryWaitMin, retryWaitMax, attempt, nil))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// backoff waits a 503's Retry-After (capped like a 429's), else backs off
// exponentially with jitter, so the requests of a mass revocation that
// failed together do not retry together.
func backoff(minWait, maxWait time.Duration, attempt int, resp *http.Response) time.Duration {
	if resp != nil && resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "" {
		return RetryAfter(resp.Header, time.Now())
	}
	// Passing no response keeps retryablehttp from reading an uncapped
	// Retry-After itself.
	wait := retryablehttp.DefaultBackoff(minWait, maxWait, attempt, nil)
	return wait/2 + rand.N(wait/2+1)
}

// RateLimitedError is what Send returns when it stops waiting out 429s.
type RateLimitedError struct {
	// Last is the last 429 answer; its body is kept in memory, unread.
	Last *http.Response
	// BudgetSpent: waiting for Last's Retry-After would pass the overall
	// budget of the request.
	BudgetSpent bool
	// Budget is that overall budget; Waited is how long Send waited out
	// 429s before it gave up.
	Budget, Waited time.Duration
	// Cause is the context's error when it ended during a wait; nil when
	// Send gave up before waiting.
	Cause error
}

func (e *RateLimitedError) Error() string {
	if e.Cause != nil {
		return e.Cause.Error() + " while waiting out a rate limit"
	}
	return "rate limited"
}

func (e *RateLimitedError) Unwrap() error { return e.Cause }

// GaveUp says why Send stopped waiting, for the caller's message: how long
// it waited, what the upstream asked for next, and which bound that passed.
func (e *RateLimitedError) GaveUp() string {
	asked := "a further wait"
	if v := e.Last.Header.Get("Retry-After"); v != "" {
		asked = fmt.Sprintf("a further wait (Retry-After: %s)", v)
	}
	bound := "the request's deadline"
	if e.BudgetSpent {
		bound = fmt.Sprintf("the %s the engine waits out rate limits for one request", e.Budget)
	}
	return fmt.Sprintf("gave up after waiting out rate limits for %s: the upstream asked for %s that would pass %s; try again later",
		e.Waited.Round(time.Second), asked, bound)
}

// Send makes one logical request: send makes it once, with the retries of
// one of w's retrying clients. Network errors and 5xx are retried there
// within MaxRetries; a 429 comes back here and is waited out outside that
// count (the gate slows down and pauses every request of the client for
// its Retry-After) until the retry budget or ctx runs out: then Send
// returns a *RateLimitedError. logArgs go into the debug log of each wait.
func (w *Wire) Send(ctx context.Context, send func() (*http.Response, error), logArgs ...any) (*http.Response, error) {
	began := time.Now()
	budgetEnd := began.Add(w.budget)
	for {
		resp, err := send()
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusTooManyRequests {
			if resp.StatusCode < 500 {
				// The upstream took the request at this rate.
				w.gate.Recover()
			}
			return resp, nil
		}

		// Kept in memory, so that the answer outlives the connection.
		resp.Body = io.NopCloser(bytes.NewReader(ReadErrorBody(resp)))
		wait := RetryAfter(resp.Header, time.Now())
		w.gate.BackOff(wait)
		resume := time.Now().Add(wait)
		if resume.After(budgetEnd) {
			return nil, &RateLimitedError{Last: resp, BudgetSpent: true, Budget: w.budget, Waited: time.Since(began)}
		}
		if deadline, ok := ctx.Deadline(); ok && resume.After(deadline) {
			return nil, &RateLimitedError{Last: resp, Budget: w.budget, Waited: time.Since(began)}
		}
		w.logger.Debug("rate limited; waiting", append(logArgs, "retry_after", wait)...)
		timer := time.NewTimer(wait)
		waitStart := time.Now()
		select {
		case <-ctx.Done():
			timer.Stop()
			w.observer.Waited(WaitRetryAfter, time.Since(waitStart))
			return nil, &RateLimitedError{Last: resp, Cause: ctx.Err()}
		case <-timer.C:
		}
		w.observer.Waited(WaitRetryAfter, time.Since(waitStart))
	}
}
