package climatiq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/internal/upstream"
)

// do sends one logical request. Network errors and 5xx are retried by
// go-retryablehttp within MaxRetries; a 429 comes back here and is waited
// out outside that count, until the retry budget or ctx runs out.
func (c *Client) do(ctx context.Context, op, method, target, bearer string, body, out any, limit int64) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return fmt.Errorf("climatiq: %s: encoding request: %w", op, err)
		}
	}
	client := c.idempotent
	if method == http.MethodPost {
		client = c.create
	}
	path := logPath(target)
	budgetEnd := time.Now().Add(c.retryBudget)
	for {
		req, err := newRequest(ctx, method, target, bearer, payload)
		if err != nil {
			return fmt.Errorf("climatiq: %s: %w", op, err)
		}
		resp, err := client.Do(req)
		if err != nil {
			c.logger.Debug("request failed", "op", op, "method", method, "path", path, "error", err)
			if ctx.Err() == nil && !errors.Is(err, errLimiterDeadline) && isTimeout(err) {
				return fmt.Errorf("climatiq: %s: no answer within the request timeout (%s): %w", op, c.timeout, err)
			}
			return fmt.Errorf("climatiq: %s: %w", op, err)
		}

		if resp.StatusCode != http.StatusTooManyRequests {
			if resp.StatusCode < 500 {
				// The upstream took the request at this rate.
				c.gate.Recover()
			}
			err := decodeResponse(op, resp, out, limit, bearer, c.managementKey)
			if err != nil {
				c.logger.Debug("request failed", "op", op, "method", method, "path", path, "status", resp.StatusCode)
			}
			return err
		}

		rateErr := readError(op, resp, bearer, c.managementKey)
		wait := rateErr.RetryAfter
		c.gate.BackOff(wait)
		resume := time.Now().Add(wait)
		if resume.After(budgetEnd) {
			rateErr.Message += fmt.Sprintf(" (gave up: waiting out rate limits took more than %s)", c.retryBudget)
			return rateErr
		}
		if deadline, ok := ctx.Deadline(); ok && resume.After(deadline) {
			return rateErr
		}
		c.logger.Debug("rate limited; waiting", "op", op, "method", method, "path", path, "retry_after", wait)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("climatiq: %s: %w while waiting out a rate limit: %w", op, ctx.Err(), rateErr)
		case <-timer.C:
		}
	}
}

func newRequest(ctx context.Context, method, target, bearer string, payload []byte) (*retryablehttp.Request, error) {
	var body any // a typed nil would make retryablehttp send an empty body
	if payload != nil {
		body = payload
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+bearer)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)
	// Only with a body: some servers reject a JSON content type with an
	// empty body, as on GET and DELETE.
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// decodeResponse turns an answer into out or an *Error, and closes it.
// secrets are scrubbed from upstream messages in case one is echoed.
func decodeResponse(op string, resp *http.Response, out any, limit int64, secrets ...string) error {
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return readError(op, resp, secrets...)
	}
	defer drain(resp)
	if out == nil {
		return nil
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return fmt.Errorf("climatiq: %s: reading response: %w", op, err)
	}
	if int64(len(data)) > limit {
		return &Error{Op: op, StatusCode: resp.StatusCode, Message: fmt.Sprintf("response larger than %d bytes", limit)}
	}
	if err := decodeJSON(data, out); err != nil {
		return &Error{Op: op, StatusCode: resp.StatusCode, Message: "invalid JSON in response"}
	}
	return nil
}

// readError turns an error answer into an *Error, and closes it.
func readError(op string, resp *http.Response, secrets ...string) *Error {
	defer drain(resp)
	// A partial body still yields its status.
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	return newError(op, resp.StatusCode, resp.Header, data, secrets...)
}

// invalidResponse is a success answer the client cannot use.
func invalidResponse(op, what string) *Error {
	return &Error{Op: op, StatusCode: http.StatusOK, Message: "invalid response: " + what}
}

// attemptTransport paces every attempt, retries included, through the
// gate, and only then starts that attempt's timeout, so queueing at the
// rate limiter never counts as the upstream being slow.
type attemptTransport struct {
	base    http.RoundTripper
	gate    *upstream.Gate
	timeout time.Duration
}

// RoundTrip waits at the gate, then sends with the per-attempt timeout,
// which also covers reading the body.
//
// attemptTransport deliberately has no CloseIdleConnections: retryablehttp
// calls it after every failed request, which would drop the pooled
// connections of all concurrent requests. Client.Close reaches the base.
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

// logPath keeps only the path of a URL for logs: never a query or userinfo.
func logPath(target string) string {
	if u, err := url.Parse(target); err == nil {
		return u.Path
	}
	return ""
}
