package upstream

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

const (
	defaultRetryAfter = time.Second
	maxRetryAfter     = 30 * time.Second
	// maxErrorBody bounds what is read of an error answer.
	maxErrorBody = 64 << 10
)

// Sentinels are one platform's errors for the statuses that callers test
// for with errors.Is: its Error types match them by status.
type Sentinels struct {
	NotFound, Unauthorized, Forbidden, RateLimited error
}

// NewSentinels makes a platform's sentinels, e.g. "climatiq: not found".
func NewSentinels(platform string) Sentinels {
	return Sentinels{
		NotFound:     errors.New(platform + ": not found"),
		Unauthorized: errors.New(platform + ": unauthorized"),
		Forbidden:    errors.New(platform + ": forbidden"),
		RateLimited:  errors.New(platform + ": rate limited"),
	}
}

// Is reports whether target is the sentinel of status.
func (s Sentinels) Is(status int, target error) bool {
	var sentinel error
	switch status {
	case http.StatusNotFound:
		sentinel = s.NotFound
	case http.StatusUnauthorized:
		sentinel = s.Unauthorized
	case http.StatusForbidden:
		sentinel = s.Forbidden
	case http.StatusTooManyRequests:
		sentinel = s.RateLimited
	}
	return sentinel != nil && sentinel == target
}

// ReadErrorBody reads the start of an error answer and closes it. A partial
// body is returned as far as it came: the status matters more.
func ReadErrorBody(resp *http.Response) []byte {
	defer Drain(resp)
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	return data
}

// Redirected says where a 3xx answer pointed ("redirected to
// https://host/path"), for an error message; "" for any other answer. The
// query is left out: a redirect may carry a token in it.
func Redirected(status int, h http.Header) string {
	if status < 300 || status > 399 {
		return ""
	}
	target, err := url.Parse(h.Get("Location"))
	if err != nil || h.Get("Location") == "" {
		return "redirected, with no usable Location"
	}
	target.RawQuery, target.Fragment, target.User = "", "", nil
	return "redirected to " + target.String()
}

// RetryAfter reads Retry-After as seconds or an HTTP date, bounded.
func RetryAfter(h http.Header, now time.Time) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return defaultRetryAfter
	}
	var d time.Duration
	if secs, err := strconv.Atoi(v); err == nil {
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	} else {
		return defaultRetryAfter
	}
	switch {
	case d <= 0:
		return defaultRetryAfter
	case d > maxRetryAfter:
		return maxRetryAfter
	}
	return d
}
