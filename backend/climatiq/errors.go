package climatiq

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/internal/upstream"
)

var sentinels = upstream.NewSentinels(platform)

// Sentinels for errors.Is; every upstream error answer is an *Error that
// matches the one for its status.
var (
	ErrNotFound     = sentinels.NotFound
	ErrUnauthorized = sentinels.Unauthorized
	ErrForbidden    = sentinels.Forbidden
	ErrRateLimited  = sentinels.RateLimited
)

// Error is an upstream answer that was not a success, or a success the
// client could not use. It carries the upstream's status and message, never
// a key or a raw body.
type Error struct {
	Op         string // what the client was doing, e.g. "create key"
	StatusCode int
	Code       string // the upstream's error_code, if any
	Message    string
	RetryAfter time.Duration // for 429 and 503: how long the upstream asked to wait

	// absence is what a listing showed after an answer that may mean a
	// missing id (see confirmAbsence).
	absence absence
}

type absence int8

const (
	absenceUnknown absence = iota
	confirmedAbsent
	confirmedPresent
)

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "climatiq: %s: %d %s", e.Op, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Message != "" && e.Message != http.StatusText(e.StatusCode) {
		b.WriteString(": " + e.Message)
	}
	if e.Code != "" {
		b.WriteString(" (" + e.Code + ")")
	}
	switch e.absence {
	case confirmedAbsent:
		b.WriteString("; it is gone: not listed upstream")
	case confirmedPresent:
		b.WriteString("; it is still listed upstream")
	}
	return b.String()
}

// Is matches the sentinel for the error's status.
// A listing that confirmed the resource absent (or present) overrides the
// status as to ErrNotFound: a 400 or 403 for a missing id means not found,
// and a 404 for a listed one does not.
func (e *Error) Is(target error) bool {
	switch {
	case e.absence == confirmedAbsent:
		return target == ErrNotFound
	case e.absence == confirmedPresent && target == ErrNotFound:
		return false
	}
	return sentinels.Is(e.StatusCode, target)
}

// newError builds an *Error from an error answer. Climatiq answers
// {error, error_code, message}; anything else yields the status text.
// redact scrubs what the upstream says, in case it echoes a key.
func newError(op string, status int, header http.Header, body []byte, redact upstream.Redactor) *Error {
	e := &Error{Op: op, StatusCode: status}
	var payload struct {
		Error     string `json:"error"`
		ErrorCode string `json:"error_code"`
		Message   string `json:"message"`
	}
	if json.Unmarshal(body, &payload) == nil {
		e.Code = redact.Clean(payload.ErrorCode)
		e.Message = redact.Clean(payload.Message)
		if e.Message == "" {
			e.Message = redact.Clean(payload.Error)
		}
	}
	if redirected := upstream.Redirected(status, header); redirected != "" {
		e.Message = redact.Clean(redirected)
	}
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		e.RetryAfter = upstream.RetryAfter(header, time.Now())
	}
	return e
}
