package climatiq

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

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

// maxMessageLength bounds an upstream message carried in an Error.
const maxMessageLength = 300

// Error is an upstream answer that was not a success, or a success the
// client could not use. It carries the upstream's status and message, never
// a key or a raw body.
type Error struct {
	Op         string // what the client was doing, e.g. "create key"
	StatusCode int
	Code       string // the upstream's error_code, if any
	Message    string
	RetryAfter time.Duration // for 429 and 503: how long the upstream asked to wait
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
// secrets are scrubbed from what the upstream says, in case it echoes one.
func newError(op string, status int, header http.Header, body []byte, secrets ...string) *Error {
	e := &Error{Op: op, StatusCode: status}
	var payload struct {
		Error     string `json:"error"`
		ErrorCode string `json:"error_code"`
		Message   string `json:"message"`
	}
	if json.Unmarshal(body, &payload) == nil {
		e.Code = cleanMessage(payload.ErrorCode, secrets)
		e.Message = cleanMessage(payload.Message, secrets)
		if e.Message == "" {
			e.Message = cleanMessage(payload.Error, secrets)
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

// cleanMessage keeps an upstream message to one printable line of at most
// maxMessageLength characters, without secrets, before it goes into an
// error that Vault shows and logs.
func cleanMessage(s string, secrets []string) string {
	for _, secret := range secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "[redacted]")
		}
	}
	// strings.Map also turns invalid UTF-8 into U+FFFD.
	s = strings.TrimSpace(strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s))
	if utf8.RuneCountInString(s) <= maxMessageLength {
		return s
	}
	return string([]rune(s)[:maxMessageLength-3]) + "..."
}
