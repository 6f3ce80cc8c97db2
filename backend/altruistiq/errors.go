package altruistiq

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"
)

// Sentinels for errors.Is; every upstream error answer is an *Error that
// matches the one for its status.
var (
	ErrUnauthorized = errors.New("altruistiq: unauthorized")
	ErrForbidden    = errors.New("altruistiq: forbidden")
	ErrNotFound     = errors.New("altruistiq: not found")
	ErrRateLimited  = errors.New("altruistiq: rate limited")
)

const (
	// maxMessageLength bounds an upstream message carried in an Error.
	maxMessageLength = 300
	// minRedactedIDLength keeps a very short client id from being
	// "redacted" out of ordinary words in a message.
	minRedactedIDLength = 4
)

// Error is an upstream answer that was not a success, or a success the
// client could not use. It carries the upstream's status and message, never
// a client secret, a token or a raw body.
type Error struct {
	Op         string // what the client was doing: "token" or "check token"
	StatusCode int    // 0 when there was no usable answer
	Message    string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("altruistiq: " + e.Op + ": ")
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, "%d %s", e.StatusCode, http.StatusText(e.StatusCode))
		if e.Message != "" {
			b.WriteString(": ")
		}
	}
	b.WriteString(e.Message)
	return b.String()
}

// Is matches the sentinel for the error's status.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.StatusCode == http.StatusUnauthorized
	case ErrForbidden:
		return e.StatusCode == http.StatusForbidden
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case ErrRateLimited:
		return e.StatusCode == http.StatusTooManyRequests
	}
	return false
}

// redactor scrubs credentials from upstream messages, in case an upstream
// echoes one back.
type redactor []string

func newRedactor(secrets ...string) redactor {
	var r redactor
	for _, s := range secrets {
		if s != "" {
			r = append(r, s)
		}
	}
	return r
}

// clean keeps an upstream message to one printable line of at most
// maxMessageLength characters, without credentials, before it goes into an
// error that Vault shows and logs.
func (r redactor) clean(s string) string {
	for _, secret := range r {
		s = strings.ReplaceAll(s, secret, "[redacted]")
	}
	// strings.Map also turns invalid UTF-8 into U+FFFD.
	s = strings.TrimSpace(strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f {
			return ' '
		}
		return c
	}, s))
	if utf8.RuneCountInString(s) <= maxMessageLength {
		return s
	}
	return string([]rune(s)[:maxMessageLength-3]) + "..."
}

// message extracts what an error body says. Altruistiq answers
// {"status": "Unauthorized"}; RFC 6749 endpoints {error, error_description}.
// A body that is not JSON yields no message: it may be an HTML page, or
// echo the request.
func (r redactor) message(body []byte) string {
	var fields map[string]json.RawMessage
	if json.Unmarshal(body, &fields) != nil {
		return ""
	}
	// Fields of another type (an error object, say) are ignored rather
	// than failing the whole message.
	text := func(name string) string {
		var s string
		_ = json.Unmarshal(fields[name], &s)
		return s
	}
	code := text("error")
	// The most specific wins; an RFC 6749 code is kept next to its
	// description because it names the cause (invalid_client, invalid_scope).
	msg := firstNonEmpty(text("error_description"), text("message"), text("status"))
	switch {
	case msg == "":
		msg = code
	case code != "" && code != msg:
		msg += " (" + code + ")"
	}
	return r.clean(msg)
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}
