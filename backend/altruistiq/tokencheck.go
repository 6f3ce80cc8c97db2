package altruistiq

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
)

// Requests pass the shared wire (upstream.Wire: 429s waited out, retries,
// pacing, per-attempt timeouts). Token requests pass tokenResponseCheck
// first, which turns an unusable success answer into an *Error before
// oauth2 reads it.

// maxTokenBody matches what oauth2 reads of a token answer.
const maxTokenBody = 1 << 20

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
