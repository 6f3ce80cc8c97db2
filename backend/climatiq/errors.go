package climatiq

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/internal/upstream"
)

// Sentinels for errors.Is; every upstream error answer is an *Error that
// matches the one for its status.
var (
	ErrNotFound     = errors.New("climatiq: not found")
	ErrUnauthorized = errors.New("climatiq: unauthorized")
	ErrForbidden    = errors.New("climatiq: forbidden")
	ErrRateLimited  = errors.New("climatiq: rate limited")
)

// Error is an upstream answer that was not a success. It carries the
// upstream's status and message, never a key or a raw body.
type Error struct {
	Op         string // what the client was doing, e.g. "create key"
	StatusCode int
	Code       string // the upstream's error_code, if any
	Message    string
	RetryAfter time.Duration // for 429s that outlasted the retry budget
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "climatiq: %s: %d %s", e.Op, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Message != "" && e.Message != http.StatusText(e.StatusCode) {
		b.WriteString(": " + e.Message)
	}
	if e.Code != "" {
		b.WriteString(" (" + e.Code + ")")
	}
	return b.String()
}

// Is matches the sentinel for the error's status.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case ErrUnauthorized:
		return e.StatusCode == http.StatusUnauthorized
	case ErrForbidden:
		return e.StatusCode == http.StatusForbidden
	case ErrRateLimited:
		return e.StatusCode == http.StatusTooManyRequests
	}
	return false
}

// newError builds an *Error from an error answer. Climatiq answers
// {error, error_code, message}; anything else yields the status text.
func newError(op string, status int, header http.Header, body []byte) *Error {
	e := &Error{Op: op, StatusCode: status}
	var payload struct {
		Error     string `json:"error"`
		ErrorCode string `json:"error_code"`
		Message   string `json:"message"`
	}
	if json.Unmarshal(body, &payload) == nil {
		e.Code = upstream.CleanMessage(payload.ErrorCode)
		e.Message = upstream.CleanMessage(payload.Message)
		if e.Message == "" {
			e.Message = upstream.CleanMessage(payload.Error)
		}
	}
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		e.RetryAfter = upstream.RetryAfter(header, time.Now())
	}
	return e
}
