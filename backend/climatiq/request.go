package climatiq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/internal/upstream"
)

// do sends one logical request through the wire: network errors and 5xx
// are retried within MaxRetries (creates only when never sent), 429s are
// waited out outside that count, until the retry budget or ctx runs out.
func (c *Client) do(ctx context.Context, op, method, target, bearer string, body, out any, limit int64) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return fmt.Errorf("climatiq: %s: encoding request: %w", op, err)
		}
	}
	client := c.wire.Idempotent
	if method == http.MethodPost {
		client = c.wire.Create
	}
	path := logPath(target)
	redact := c.redact
	if bearer != c.managementKey {
		redact = redact.With(bearer)
	}
	logger := c.wire.Logger()
	ctx = upstream.WithOperation(ctx, op)
	resp, err := c.wire.Send(ctx, func() (*http.Response, error) {
		req, err := newRequest(ctx, method, target, bearer, payload)
		if err != nil {
			return nil, err
		}
		return client.Do(req)
	}, "op", op, "method", method, "path", path)

	var rateLimited *upstream.RateLimitedError
	switch {
	case errors.As(err, &rateLimited):
		rateErr := readError(op, rateLimited.Last, redact)
		if rateLimited.Cause != nil {
			return fmt.Errorf("climatiq: %s: %w while waiting out a rate limit: %w", op, rateLimited.Cause, rateErr)
		}
		rateErr.Message += " (" + rateLimited.GaveUp() + ")"
		return rateErr
	case err != nil:
		logger.Debug("request failed", "op", op, "method", method, "path", path, "error", err)
		return c.wire.Failed(ctx, op, err)
	}
	if err := decodeResponse(op, resp, out, limit, redact); err != nil {
		logger.Debug("request failed", "op", op, "method", method, "path", path, "status", resp.StatusCode)
		return err
	}
	return nil
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
	// Only with a body: some servers reject a JSON content type with an
	// empty body, as on GET and DELETE.
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// decodeResponse turns an answer into out or an *Error, and closes it.
// redact scrubs upstream messages in case one echoes a key, in any form.
func decodeResponse(op string, resp *http.Response, out any, limit int64, redact upstream.Redactor) error {
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return readError(op, resp, redact)
	}
	defer upstream.Drain(resp)
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
func readError(op string, resp *http.Response, redact upstream.Redactor) *Error {
	return newError(op, resp.StatusCode, resp.Header, upstream.ReadErrorBody(resp), redact)
}

// invalidResponse is a success answer the client cannot use.
func invalidResponse(op, what string) *Error {
	return &Error{Op: op, StatusCode: http.StatusOK, Message: "invalid response: " + what}
}

// logPath keeps only the path of a URL for logs: never a query or userinfo.
func logPath(target string) string {
	if u, err := url.Parse(target); err == nil {
		return u.Path
	}
	return ""
}
