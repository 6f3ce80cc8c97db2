package altruistiq

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/internal/upstream"
)

// Sentinels for errors.Is; every upstream error answer is an *Error that
// matches the one for its status.
var (
	ErrUnauthorized = sentinels.Unauthorized
	ErrForbidden    = sentinels.Forbidden
	ErrNotFound     = sentinels.NotFound
	ErrRateLimited  = sentinels.RateLimited
)

var sentinels = upstream.NewSentinels(platform)

// minRedactedIDLength keeps a very short client id from being "redacted"
// out of ordinary words in a message.
const minRedactedIDLength = 4

// Error is an upstream answer that was not a success, or a success the
// client could not use. It carries the upstream's status and message, never
// a client secret, a token or a raw body.
type Error struct {
	Op         string // what the client was doing: "token" or "check token"
	StatusCode int    // 0 when there was no usable answer
	Message    string
}

// FromAPI reports whether the error is the regular API's answer to the
// check of a fresh token, rather than the token endpoint's.
func (e *Error) FromAPI() bool { return e.Op == opCheckToken }

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
func (e *Error) Is(target error) bool { return sentinels.Is(e.StatusCode, target) }

// errorMessage extracts what an error body says, each part passed through
// clean (a Redactor's Clean or Brief). Altruistiq answers {"message": ...}
// or {"status": "Unauthorized"}; RFC 6749 endpoints {error,
// error_description}. Nothing else of the body is kept.
// A body that is not JSON yields no message: it may be an HTML page, or
// echo the request.
func errorMessage(body []byte, clean func(string) string) string {
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
	// Altruistiq's own fields first (its errors carry message or status),
	// then RFC 6749's. An RFC 6749 code is kept next to the message
	// because it names the cause (invalid_client, invalid_scope).
	msg := firstNonEmpty(text("message"), text("status"), text("error_description"))
	return joinMessage(clean(msg), clean(text("error")))
}

// joinMessage is a cleaned message with its cleaned RFC 6749 code.
func joinMessage(msg, code string) string {
	switch {
	case msg == "":
		return code
	case code != "" && code != msg:
		return msg + " (" + code + ")"
	}
	return msg
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}
