// Package altruistiqtest is an in-process fake of Altruistiq's OAuth token
// endpoint and public API, in the spirit of net/http/httptest, with switches
// for latency, 5xx, 429, garbage JSON and error answers that echo the
// request. It listens on 127.0.0.1 only.
package altruistiqtest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/internal/loopback"
)

const (
	tokenPath     = "/api/public/v1/oauth2/token"
	pactTokenPath = "/auth/token"
	apiPrefix     = "/api/public/v1"
)

// Server is a running fake.
type Server struct {
	srv *httptest.Server

	mu           sync.Mutex
	clientID     string
	clientSecret string
	lifetime     time.Duration
	tokens       map[string]time.Time // access token -> expiry; zero: never
	tokenCalls   int
	tokensIssued int
	lastScopes   []string

	latency     time.Duration
	failureRate float64
	failNext    int
	failStatus  int
	garbage     bool
	echo        bool
}

// NewServer starts a fake that accepts one client. It panics when it cannot
// listen, as httptest does.
func NewServer(clientID, clientSecret string) *Server {
	s := &Server{clientID: clientID, clientSecret: clientSecret, lifetime: time.Hour, tokens: map[string]time.Time{}}
	mux := http.NewServeMux()
	mux.HandleFunc(tokenPath, func(w http.ResponseWriter, r *http.Request) { s.serveToken(w, r, false) })
	mux.HandleFunc(pactTokenPath, func(w http.ResponseWriter, r *http.Request) { s.serveToken(w, r, true) })
	mux.HandleFunc(apiPrefix+"/organization/", s.serveOrganization)
	s.srv = loopback.NewServer("altruistiqtest", mux)
	return s
}

// Close stops the fake and waits for its requests to finish.
func (s *Server) Close() { s.srv.Close() }

// URL is the fake's base URL.
func (s *Server) URL() string { return s.srv.URL }

// TokenURL takes client credentials in the form body, as Altruistiq does.
func (s *Server) TokenURL() string { return s.srv.URL + tokenPath }

// PACTTokenURL takes client credentials only as HTTP Basic, as PACT-style hosts do.
func (s *Server) PACTTokenURL() string { return s.srv.URL + pactTokenPath }

// APIURL is the base of the public API.
func (s *Server) APIURL() string { return s.srv.URL + apiPrefix }

// SetTokenLifetime sets the lifetime of new tokens, in whole seconds, as
// their expires_in. Under a second, tokens never expire and come without
// expires_in.
func (s *Server) SetTokenLifetime(d time.Duration) {
	s.with(func() { s.lifetime = d.Truncate(time.Second) })
}

// SetLatency delays every token request.
func (s *Server) SetLatency(d time.Duration) { s.with(func() { s.latency = d }) }

// SetFailureRate answers this fraction of token requests with 503.
func (s *Server) SetFailureRate(p float64) { s.with(func() { s.failureRate = p }) }

// FailNext answers the next n token requests with status; a 429 carries
// Retry-After: 1.
func (s *Server) FailNext(n, status int) { s.with(func() { s.failNext, s.failStatus = n, status }) }

// SetGarbage makes token answers invalid JSON.
func (s *Server) SetGarbage(on bool) { s.with(func() { s.garbage = on }) }

// SetEchoRequest makes every error answer echo the request, as some token
// endpoints and proxies do: its message quotes the Authorization header and
// the body verbatim (a Basic header's base64 of id:secret, a form body's
// URL-encoded secret) and the request as JSON, which a "request" field
// carries too. Off by default.
func (s *Server) SetEchoRequest(on bool) { s.with(func() { s.echo = on }) }

// SetClientSecret rotates the client secret; the old one then gets 401.
func (s *Server) SetClientSecret(secret string) { s.with(func() { s.clientSecret = secret }) }

// TokenCalls counts token requests of any outcome.
func (s *Server) TokenCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenCalls
}

// TokensIssued counts tokens handed out.
func (s *Server) TokensIssued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokensIssued
}

// ValidToken reports whether an access token is known and unexpired.
func (s *Server) ValidToken(token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.tokens[token]
	return ok && (exp.IsZero() || time.Now().Before(exp))
}

// LastScopes are the scopes of the last successful token request.
func (s *Server) LastScopes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lastScopes...)
}

func (s *Server) with(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request, basicOnly bool) {
	s.mu.Lock()
	s.tokenCalls++
	latency, garbage, echo := s.latency, s.garbage, s.echo
	fault := 0
	switch {
	case s.failNext > 0:
		s.failNext--
		fault = s.failStatus
	case s.failureRate > 0 && mrand.Float64() < s.failureRate:
		fault = http.StatusServiceUnavailable
	}
	s.mu.Unlock()

	// Reading the body first lets the server notice a client that gives up
	// during the latency below: it watches the connection only after that.
	raw, readErr := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<16))
	r.Body = io.NopCloser(bytes.NewReader(raw))
	formErr := r.ParseForm()
	if formErr == nil {
		formErr = readErr
	}
	fail := func(status int, body map[string]string) {
		writeJSON(w, status, withEcho(echo, body, r, raw))
	}
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
			return
		}
	}
	if fault != 0 {
		if fault == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "1")
		}
		fail(fault, map[string]string{"status": http.StatusText(fault)})
		return
	}
	if r.Method != http.MethodPost {
		fail(http.StatusMethodNotAllowed, map[string]string{"status": "Method Not Allowed"})
		return
	}
	if formErr != nil {
		fail(http.StatusBadRequest, map[string]string{"error": "invalid_request"})
		return
	}
	if r.PostForm.Get("grant_type") != "client_credentials" {
		fail(http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
		return
	}
	var id, secret string
	if basicOnly {
		id, secret = basicCredentials(r)
	} else {
		// The documented endpoint reads credentials from the body only.
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	s.mu.Lock()
	ok := id != "" && id == s.clientID && secret == s.clientSecret
	lifetime := s.lifetime
	s.mu.Unlock()
	if !ok {
		fail(http.StatusUnauthorized, map[string]string{"status": "Unauthorized"})
		return
	}
	if garbage {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"access_token": `))
		return
	}

	token := randomToken()
	scopes := strings.Fields(r.PostForm.Get("scope"))
	answer := map[string]any{
		"access_token": token,
		"token_type":   "Bearer",
		"scope":        strings.Join(scopes, " "),
		"issued_at":    time.Now().Unix(), // a field clients do not know
	}
	var expiry time.Time
	if lifetime > 0 {
		expiry = time.Now().Add(lifetime)
		answer["expires_in"] = int(lifetime / time.Second)
	}
	s.mu.Lock()
	s.tokens[token] = expiry
	s.tokensIssued++
	s.lastScopes = scopes
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, answer)
}

// basicCredentials reads HTTP Basic credentials, which RFC 6749 §2.3.1 has
// clients form-encode before base64.
func basicCredentials(r *http.Request) (id, secret string) {
	rawID, rawSecret, ok := r.BasicAuth()
	if !ok {
		return "", ""
	}
	id, err1 := url.QueryUnescape(rawID)
	secret, err2 := url.QueryUnescape(rawSecret)
	if err1 != nil || err2 != nil {
		return "", ""
	}
	return id, secret
}

func (s *Server) serveOrganization(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if r.Method != http.MethodGet {
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"status": "Method Not Allowed"})
		return
	}
	if !ok || !s.ValidToken(token) {
		s.mu.Lock()
		echo := s.echo
		s.mu.Unlock()
		writeJSON(w, http.StatusUnauthorized, withEcho(echo, map[string]string{"status": "Unauthorized"}, r, nil))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"id": "org_fake", "name": "Example Org"})
}

// withEcho adds the echo of the request to an error body when echo is on
// (SetEchoRequest).
func withEcho(echo bool, body map[string]string, r *http.Request, raw []byte) any {
	if !echo {
		return body
	}
	request := map[string]any{"method": r.Method, "path": r.URL.Path, "headers": r.Header, "body": string(raw)}
	asJSON, _ := json.Marshal(request)
	out := map[string]any{"request": request}
	for k, v := range body {
		out[k] = v
	}
	out["message"] = fmt.Sprintf("%s: rejected request: Authorization: %s; body: %s; as JSON: %s",
		firstNonEmpty(body["status"], body["error"]), r.Header.Get("Authorization"), raw, asJSON)
	return out
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func randomToken() string {
	buf := make([]byte, 24)
	_, _ = rand.Read(buf)
	return "atq_" + hex.EncodeToString(buf)
}
