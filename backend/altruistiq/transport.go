package altruistiq

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-retryablehttp"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/internal/upstream"
)

// The layers every request passes through, outermost first:
//
//	rateLimitTransport  waits out 429s (Retry-After) outside MaxRetries
//	retryablehttp       retries network errors and 5xx up to MaxRetries
//	attemptTransport    paces each attempt (RateLimit), then times it out
//	Options.Transport
//
// Token requests pass tokenResponseCheck first, which turns an unusable
// success answer into an *Error before oauth2 reads it.

// maxTokenBody matches what oauth2 reads of a token answer.
const maxTokenBody = 1 << 20

// noRedirects makes a 3xx an error answer: following one could resend the
// client secret in the form body to another host.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// retryPolicy retries network errors and 5xx (but 501). A 429 goes back to
// rateLimitTransport, which waits it out without counting it.
func retryPolicy(ctx context.Context, resp *http.Response, err error) (bool, error) {
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

// backoff waits a 503's Retry-After (capped), else backs off exponentially
// with jitter.
func backoff(minWait, maxWait time.Duration, attempt int, resp *http.Response) time.Duration {
	if resp != nil && resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "" {
		return upstream.RetryAfter(resp.Header, time.Now())
	}
	// Passing no response keeps retryablehttp from reading an uncapped
	// Retry-After itself.
	wait := retryablehttp.DefaultBackoff(minWait, maxWait, attempt, nil)
	return wait/2 + rand.N(wait/2+1)
}

// rateLimitTransport waits out 429 answers: the gate slows down and pauses
// every request of the client for the Retry-After, and the request is sent
// again, until the retry budget or the request's context runs out. The
// last 429 is then returned as the answer.
type rateLimitTransport struct {
	next   http.RoundTripper
	gate   *upstream.Gate
	budget time.Duration
	logger hclog.Logger
}

func (t *rateLimitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	// The body is kept so that the request can be sent again.
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		var err error
		body, err = io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, err
		}
	}
	ctx := req.Context()
	budgetEnd := time.Now().Add(t.budget)
	for {
		attempt := req.Clone(ctx)
		attempt.Header.Set("User-Agent", userAgent)
		if body != nil {
			attempt.Body = io.NopCloser(bytes.NewReader(body))
			attempt.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
			attempt.ContentLength = int64(len(body))
		}
		resp, err := t.next.RoundTrip(attempt)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusTooManyRequests {
			if resp.StatusCode < 500 {
				// The upstream took the request at this rate.
				t.gate.Recover()
			}
			return resp, nil
		}

		wait := upstream.RetryAfter(resp.Header, time.Now())
		t.gate.BackOff(wait)
		resume := time.Now().Add(wait)
		if resume.After(budgetEnd) {
			return resp, nil
		}
		if deadline, ok := ctx.Deadline(); ok && resume.After(deadline) {
			return resp, nil
		}
		drain(resp)
		t.logger.Debug("rate limited; waiting", "method", req.Method, "path", req.URL.Path, "retry_after", wait)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-timer.C:
		}
	}
}

// attemptTransport paces every attempt, retries included, through the
// gate, and only then starts that attempt's timeout, so queueing at the
// rate limiter never counts as the upstream being slow.
//
// It deliberately has no CloseIdleConnections: retryablehttp calls it after
// every failed request, which would drop the pooled connections of all
// concurrent requests. Client.Close reaches the base transport.
type attemptTransport struct {
	base    http.RoundTripper
	gate    *upstream.Gate
	timeout time.Duration
}

// RoundTrip waits at the gate, then sends with the per-attempt timeout,
// which also covers reading the body.
func (t *attemptTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.gate.Wait(req.Context()); err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, ctxErr
		}
		// The limiter refuses at once a wait that would pass the deadline.
		return nil, errLimiterDeadline
	}
	ctx, cancel := context.WithTimeout(req.Context(), t.timeout)
	resp, err := t.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// errLimiterDeadline: the client's own rate limit would hold a request
// past its deadline. Retrying cannot help.
var errLimiterDeadline = fmt.Errorf("waiting for the client's rate limit would pass the deadline: %w", context.DeadlineExceeded)

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

// tokenResponseCheck reads a successful token answer before oauth2 does and
// turns one that is not a token into an *Error: oauth2's own errors for
// those quote the parser, and so part of the body.
type tokenResponseCheck struct {
	next http.RoundTripper
}

func (t tokenResponseCheck) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil || resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenBody+1))
	_ = resp.Body.Close()
	if err != nil {
		return nil, err
	}
	invalid := func(what string) (*http.Response, error) {
		return nil, &Error{Op: opToken, StatusCode: resp.StatusCode, Message: "invalid token response: " + what}
	}
	if len(body) > maxTokenBody {
		return invalid(fmt.Sprintf("larger than %d bytes", maxTokenBody))
	}
	// oauth2 reads form-encoded answers for these types and JSON otherwise.
	content, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if content != "application/x-www-form-urlencoded" && content != "text/plain" {
		var fields map[string]json.RawMessage
		if json.Unmarshal(body, &fields) != nil {
			return invalid("not a JSON object")
		}
		var accessToken string
		_ = json.Unmarshal(fields["access_token"], &accessToken)
		// An answer with "error" is oauth2's to report, whatever its status.
		if _, hasError := fields["error"]; !hasError && accessToken == "" {
			return invalid("no access_token")
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// isTimeout reports whether a request died waiting for the upstream.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// drain reads a little of what is left so the connection can be reused.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}
