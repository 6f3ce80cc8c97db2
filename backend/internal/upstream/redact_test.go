package upstream

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/internal/testutil"
)

func TestRedactorClean(t *testing.T) {
	tests := []struct {
		name    string
		secrets []string
		in      string
		want    string
	}{
		{"control characters", nil, " a\nb\x00c\x7f ", "a b c"},
		{"secrets redacted", []string{"s3cr3t", "", "id-1"}, "bad s3cr3t for id-1", "bad [redacted] for [redacted]"},
		{"empty secret redacts nothing", []string{""}, "plain", "plain"},
		{"invalid UTF-8 replaced", nil, "a\xffb", "a\uFFFDb"},
		{"short enough", nil, strings.Repeat("x", MaxMessageLength), strings.Repeat("x", MaxMessageLength)},
		{"cut with an ellipsis", nil, strings.Repeat("x", 1000), strings.Repeat("x", MaxMessageLength-3) + "..."},
		{"cut between multi-byte characters", nil, strings.Repeat("é", 1000), strings.Repeat("é", MaxMessageLength-3) + "..."},
		{"redacted before cutting", []string{"s3cr3t"}, strings.Repeat("y", MaxMessageLength-5) + "s3cr3t", strings.Repeat("y", MaxMessageLength-5) + "[r..."},
		{"query-escaped", []string{"a b&c"}, "client_secret=a+b%26c", "client_secret=[redacted]"},
		{"base64 whole", []string{"s3cr3t-value"}, "Bearer czNjcjN0LXZhbHVl", "Bearer [redacted]"},
		{"short encodings of a short secret left alone", []string{"ab"}, "YWI= ab", "YWI= [redacted]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := NewRedactor(tc.secrets...).Clean(tc.in)
			if got != tc.want {
				t.Fatalf("Clean = %q, want %q", got, tc.want)
			}
			if !utf8.ValidString(got) || utf8.RuneCountInString(got) > MaxMessageLength {
				t.Fatalf("Clean = %q: not valid UTF-8 or too long", got)
			}
		})
	}
}

func TestRedactorWith(t *testing.T) {
	// The longer form goes first: it may contain one of the others.
	r := NewRedactor("tok").With("token-tok", "")
	if got := r.Clean("token-tok and tok"); got != "[redacted] and [redacted]" {
		t.Fatalf("Clean = %q", got)
	}
	if n, base := r.Len(), NewRedactor("tok").Len(); n <= base {
		t.Fatalf("With added no forms: %d, %d before", n, base)
	}
	if NewRedactor("").Len() != 0 || (Redactor{}).Clean(" plain ") != "plain" {
		t.Fatal("an empty Redactor redacts")
	}
}

func TestRedactorBrief(t *testing.T) {
	r := NewRedactor("s3cr3t-value")
	tests := []struct {
		name, in, want string
	}{
		{"plain", "Unauthorized", "Unauthorized"},
		{"echo withheld whole", "bad client_secret=s3cr3t-value, see docs", Withheld},
		{"base64 echo withheld", "got czNjcjN0LXZhbHVl", Withheld},
		{"cut short", strings.Repeat("x", 500), strings.Repeat("x", MaxBriefLength-3) + "..."},
		{"one line", "a\nb", "a b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := r.Brief(tc.in); got != tc.want {
				t.Fatalf("Brief = %q, want %q", got, tc.want)
			}
		})
	}
}

// Secrets with characters that every escaping changes, so that each form
// differs from the others.
var (
	oddSecret   = `s3cr3t/+&"<é> =%?`
	oddID       = "client id/1"
	plainID     = "cid"
	plainSecret = "ATQ-SECRET-REFLECT-7"
)

// TestRedactorForms: each form a secret may be echoed in is redacted,
// alone and inside longer text, checked against testutil's independent
// list of encodings.
func TestRedactorForms(t *testing.T) {
	for _, cred := range []struct{ id, secret string }{{plainID, plainSecret}, {oddID, oddSecret}} {
		r := NewRedactor(cred.secret).WithBasicAuth(cred.id, cred.secret)
		forms := append(testutil.Encodings(cred.secret), testutil.BasicEncodings(cred.id, cred.secret)...)
		for _, f := range forms {
			for _, wrap := range []string{"%s", "echo: %s.", "Basic %s", `{"got":"%s"}`} {
				t.Run(fmt.Sprintf("%s/%s/%s", cred.secret, f.Name, wrap), func(t *testing.T) {
					in := fmt.Sprintf(wrap, f.Text)
					got, found := r.redact(in)
					if !found || !strings.Contains(got, redacted) {
						t.Fatalf("%q: nothing redacted: %q", in, got)
					}
					testutil.NoEncodedSecrets(t, got, cred.secret)
					testutil.NoSecrets(t, got, forms[0].Text)
					for _, g := range forms {
						if strings.Contains(got, g.Text) {
							t.Fatalf("%q still carries the %s: %q", in, g.Name, got)
						}
					}
				})
			}
		}
	}
}

// TestBase64Cores: the secret is found in the base64 of any text that holds
// it, whatever precedes and follows it, in both alphabets, padded or not.
func TestBase64Cores(t *testing.T) {
	r := NewRedactor(plainSecret)
	for prefix := range 7 {
		for suffix := range 4 {
			text := strings.Repeat("p", prefix) + plainSecret + strings.Repeat("s", suffix)
			for _, enc := range base64Encodings {
				encoded := enc.EncodeToString([]byte(text))
				if _, found := r.redact(encoded); !found {
					t.Errorf("base64 of %q (%s) not redacted", text, encoded)
				}
			}
		}
	}
}

// echoServer answers every request 401 with a JSON body whose message
// echoes what it received, rendered by echo.
func echoServer(t *testing.T, echo func(r *http.Request, body []byte) string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]string{"status": "Unauthorized", "message": echo(r, body)})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestRedactorEchoingServer sends credentials through the wire in each way
// the clients send them, to a server that echoes the request in each way
// an upstream might, and checks that neither the raw error body nor the
// message in it keeps any form of the secret once cleaned.
func TestRedactorEchoingServer(t *testing.T) {
	sends := []struct {
		name string
		send func(req *http.Request, id, secret string)
	}{
		{"basic form-encoded (oauth2)", func(req *http.Request, id, secret string) {
			req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
		}},
		{"basic as it is", func(req *http.Request, id, secret string) { req.SetBasicAuth(id, secret) }},
		{"bearer", func(req *http.Request, _, secret string) { req.Header.Set("Authorization", "Bearer "+secret) }},
		{"form body", func(req *http.Request, id, secret string) {
			setBody(req, "application/x-www-form-urlencoded", url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}}.Encode())
		}},
		{"JSON body", func(req *http.Request, _, secret string) {
			b, _ := json.Marshal(map[string]string{"management_key": secret})
			setBody(req, "application/json", string(b))
		}},
	}
	echoes := []struct {
		name string
		echo func(r *http.Request, body []byte) string
	}{
		{"header verbatim", func(r *http.Request, _ []byte) string { return "Authorization: " + r.Header.Get("Authorization") }},
		{"body verbatim", func(_ *http.Request, body []byte) string { return "body: " + string(body) }},
		{"request as JSON", func(r *http.Request, body []byte) string {
			b, _ := json.Marshal(map[string]any{"headers": r.Header, "body": string(body)})
			return string(b)
		}},
		{"request Go-quoted", func(r *http.Request, body []byte) string {
			return fmt.Sprintf("header %q body %q", r.Header.Get("Authorization"), body)
		}},
		{"credentials decoded", func(r *http.Request, body []byte) string {
			user, pass, _ := r.BasicAuth()
			u, _ := url.QueryUnescape(user)
			p, _ := url.QueryUnescape(pass)
			form, _ := url.ParseQuery(string(body))
			return fmt.Sprintf("user %s pass %s unescaped %s:%s form secret %s path %s", user, pass, u, p,
				form.Get("client_secret"), url.PathEscape(form.Get("client_secret")))
		}},
		{"whole request in base64", func(r *http.Request, body []byte) string {
			var b bytes.Buffer
			_ = r.Header.Write(&b)
			b.Write(body)
			return base64.StdEncoding.EncodeToString(b.Bytes()) + " " + base64.RawURLEncoding.EncodeToString(b.Bytes())
		}},
	}
	echoed := map[string]int{} // by way of sending: how many echoes carried the credential
	for _, cred := range []struct{ id, secret string }{{plainID, plainSecret}, {oddID, oddSecret}} {
		r := NewRedactor(cred.secret).WithBasicAuth(cred.id, cred.secret)
		forms := append(testutil.Encodings(cred.secret), testutil.BasicEncodings(cred.id, cred.secret)...)
		for _, e := range echoes {
			srv := echoServer(t, e.echo)
			w, err := NewWire(Options{Platform: "test"})
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range sends {
				t.Run(cred.secret+"/"+s.name+"/"+e.name, func(t *testing.T) {
					req, err := http.NewRequest(http.MethodPost, srv.URL, nil)
					if err != nil {
						t.Fatal(err)
					}
					s.send(req, cred.id, cred.secret)
					resp, err := w.Idempotent.StandardClient().Do(req)
					if err != nil {
						t.Fatal(err)
					}
					raw := string(ReadErrorBody(resp))
					var answer struct{ Message string }
					if err := json.Unmarshal([]byte(raw), &answer); err != nil {
						t.Fatal(err)
					}
					leaked := false
					for _, f := range forms {
						leaked = leaked || strings.Contains(raw, f.Text) || strings.Contains(answer.Message, f.Text)
					}
					if !leaked {
						return // this echo does not show how it was sent, e.g. the body of a Bearer request
					}
					echoed[s.name]++
					for what, text := range map[string]string{"raw body": raw, "message": answer.Message} {
						cleaned, _ := r.redact(text)
						for _, f := range forms {
							if strings.Contains(cleaned, f.Text) {
								t.Fatalf("the cleaned %s carries the %s: %q", what, f.Name, cleaned)
							}
						}
					}
					if got := r.Brief(answer.Message); got != Withheld {
						t.Fatalf("Brief passed an echo: %q", got)
					}
					testutil.NoEncodedSecrets(t, r.Clean(answer.Message), cred.secret)
				})
			}
		}
	}
	for _, s := range sends {
		if echoed[s.name] < 4 {
			t.Errorf("%s: only %d echoes carried the credential; the test proves little", s.name, echoed[s.name])
		}
	}
}

func setBody(req *http.Request, contentType, body string) {
	req.Header.Set("Content-Type", contentType)
	req.Body = io.NopCloser(strings.NewReader(body))
	req.ContentLength = int64(len(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil }
}
