package climatiq

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/internal/upstream"
)

// FuzzDecodeResponse feeds arbitrary bodies and statuses to the response
// decoding: it must never panic, and an error never carries the raw body.
func FuzzDecodeResponse(f *testing.F) {
	seeds := []struct {
		status int
		body   string
	}{
		{200, `[{"id":"prj_1","project_name":"p","owner":{"id":"u"}}]`},
		{200, `[{"id":12345678901234567890,"key_name":"k","key":"sk_x","project":{"id":7}}]`},
		{200, `{"id": "unterminated`},
		{200, ``},
		{200, `null`},
		{200, `[{"id":{"nested":true}}]`},
		{401, `{"error":"Unauthorized","error_code":"invalid_management_key","message":"bad key"}`},
		{404, `not json at all`},
		{429, `{"message":"` + strings.Repeat("x", 1000) + `"}`},
		{503, "{\"message\":\"line\\nbreak\\u0000\"}"},
	}
	for _, s := range seeds {
		f.Add(s.status, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		if status < 100 || status > 599 {
			return
		}
		for _, out := range []any{&[]Project{}, &[]APIKey{}, &APIKey{}, &Project{}} {
			resp := &http.Response{StatusCode: status, Header: http.Header{}, Body: ioNopCloser(body)}
			err := decodeResponse("fuzz", resp, out, maxOtherBody, upstream.Redactor{})
			if err == nil {
				continue
			}
			msg := err.Error()
			if len(body) > 40 && strings.Contains(msg, string(body)) {
				t.Fatalf("error carries the raw body: %q", msg)
			}
			var e *Error
			if ok := asError(err, &e); ok && (utf8.RuneCountInString(e.Message) > upstream.MaxMessageLength || strings.ContainsAny(e.Message, "\n\x00")) {
				t.Fatalf("upstream message not cleaned: %q", e.Message)
			}
		}
	})
}

// FuzzOpaqueID: any JSON value for an id either decodes to its exact text
// or fails cleanly.
func FuzzOpaqueID(f *testing.F) {
	for _, s := range []string{`"abc"`, `123`, `1e400`, `-0.5`, `null`, `true`, `{}`, `"\u00e9"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		var id opaqueID
		if err := json.Unmarshal([]byte(raw), &id); err != nil {
			return
		}
		if !utf8.ValidString(string(id)) && utf8.ValidString(raw) {
			t.Fatalf("id %q from %q is not valid UTF-8", id, raw)
		}
	})
}

func ioNopCloser(b []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }

func asError(err error, target **Error) bool { return errors.As(err, target) }
