// Package leakcheck lists the forms a credential travels or may be echoed
// in, for the tests that search answers and logs for credentials (unit
// tests and e2e). It is written independently of the redaction it checks
// (backend/internal/upstream).
package leakcheck

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
)

// Form is one encoding of a credential.
type Form struct {
	Name, Text string
}

// Encodings are the forms of secret: literal, query-escaped (form bodies,
// RFC 6749 §2.3.1 Basic credentials), path-escaped, JSON-escaped (with and
// without HTML escaping), and base64 (standard and URL alphabets, padded
// and raw). An empty secret has none.
func Encodings(secret string) []Form {
	if secret == "" {
		return nil
	}
	forms := []Form{
		{"literal", secret},
		{"query-escaped", url.QueryEscape(secret)},
		{"path-escaped", url.PathEscape(secret)},
		{"JSON-escaped", jsonEscape(secret, true)},
		{"JSON-escaped without HTML escaping", jsonEscape(secret, false)},
	}
	return append(forms, base64Forms("", secret)...)
}

// BasicEncodings are the base64 forms of the HTTP Basic pair id:secret, as
// it is and with both halves form-encoded first (RFC 6749 §2.3.1, as
// golang.org/x/oauth2 sends it).
func BasicEncodings(id, secret string) []Form {
	if secret == "" {
		return nil
	}
	return append(base64Forms("id:secret ", id+":"+secret),
		base64Forms("escaped id:secret ", url.QueryEscape(id)+":"+url.QueryEscape(secret))...)
}

// All are the Encodings of every secret.
func All(secrets ...string) []Form {
	var forms []Form
	for _, s := range secrets {
		forms = append(forms, Encodings(s)...)
	}
	return forms
}

// Find names the forms that text carries.
func Find(text string, forms []Form) []string {
	var found []string
	for _, f := range forms {
		if f.Text != "" && strings.Contains(text, f.Text) {
			found = append(found, f.Name)
		}
	}
	return found
}

func base64Forms(prefix, s string) []Form {
	return []Form{
		{prefix + "base64 std", base64.StdEncoding.EncodeToString([]byte(s))},
		{prefix + "base64 url", base64.URLEncoding.EncodeToString([]byte(s))},
		{prefix + "base64 raw std", base64.RawStdEncoding.EncodeToString([]byte(s))},
		{prefix + "base64 raw url", base64.RawURLEncoding.EncodeToString([]byte(s))},
	}
}

func jsonEscape(s string, escapeHTML bool) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(escapeHTML)
	_ = enc.Encode(s)
	return strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(b.String(), `"`), "\n"), `"`)
}
