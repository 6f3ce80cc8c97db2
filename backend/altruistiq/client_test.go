package altruistiq_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/altruistiq"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/altruistiqtest"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/internal/testutil"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/internal/upstream"
)

const (
	clientID     = "client-1"
	clientSecret = "client-s3cr3t"
)

func newFake(t *testing.T) *altruistiqtest.Server {
	t.Helper()
	fake := altruistiqtest.NewServer(clientID, clientSecret)
	t.Cleanup(fake.Close)
	return fake
}

func newClient(t *testing.T, tokenURL, apiURL string, mutate func(*altruistiq.Options)) *altruistiq.Client {
	t.Helper()
	o := altruistiq.Options{TokenURL: tokenURL, APIURL: apiURL, ClientID: clientID, ClientSecret: clientSecret, MaxRetries: 2}
	return testutil.NewClient(t, altruistiq.New, o, mutate)
}

// assertNoCredentials fails when an error shows a credential.
func assertNoCredentials(t *testing.T, err error, credentials ...string) {
	t.Helper()
	testutil.NoSecrets(t, err.Error(), append(credentials, clientID, clientSecret)...)
}

func TestNewChecksOptions(t *testing.T) {
	valid := altruistiq.Options{TokenURL: altruistiq.DefaultTokenURL, APIURL: altruistiq.DefaultAPIURL, ClientID: clientID, ClientSecret: clientSecret}
	tests := []struct {
		name    string
		mutate  func(*altruistiq.Options)
		wantErr string // "": valid; else what the error names
	}{
		{"defaults", func(*altruistiq.Options) {}, ""},
		{"header auth style", func(o *altruistiq.Options) { o.AuthStyle = altruistiq.AuthStyleHeader }, ""},
		{"no client id", func(o *altruistiq.Options) { o.ClientID = "" }, "client id"},
		{"no client secret", func(o *altruistiq.Options) { o.ClientSecret = "" }, "client secret"},
		{"relative token URL", func(o *altruistiq.Options) { o.TokenURL = "/oauth2/token" }, "token URL"},
		{"ftp API URL", func(o *altruistiq.Options) { o.APIURL = "ftp://example.com" }, "API URL"},
		{"unknown auth style", func(o *altruistiq.Options) { o.AuthStyle = "basic" }, "auth style"},
		{"negative retries", func(o *altruistiq.Options) { o.MaxRetries = -1 }, "max retries"},
		{"negative rate limit", func(o *altruistiq.Options) { o.RateLimit = -1 }, "rate limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := valid
			tc.mutate(&o)
			c, err := altruistiq.New(o)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("err = %v, want none", err)
			case tc.wantErr == "":
				c.Close()
			case err == nil || !strings.HasPrefix(err.Error(), "altruistiq: ") || !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("err = %v, want one naming %q", err, tc.wantErr)
			default:
				assertNoCredentials(t, err)
			}
		})
	}
}

func TestAuthStyles(t *testing.T) {
	const oddSecret = "s3cr3t+/=:&%"
	tests := []struct {
		name    string
		secret  string
		pact    bool
		style   string
		wantErr error
	}{
		{"params on the documented endpoint", clientSecret, false, altruistiq.AuthStyleParams, nil},
		{"default style is params", clientSecret, false, "", nil},
		{"header on a PACT-style host", clientSecret, true, altruistiq.AuthStyleHeader, nil},
		{"header with a secret that needs encoding", oddSecret, true, altruistiq.AuthStyleHeader, nil},
		{"params with a secret that needs encoding", oddSecret, false, altruistiq.AuthStyleParams, nil},
		{"header on the documented endpoint", clientSecret, false, altruistiq.AuthStyleHeader, altruistiq.ErrUnauthorized},
		{"params on a PACT-style host", clientSecret, true, altruistiq.AuthStyleParams, altruistiq.ErrUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := altruistiqtest.NewServer(clientID, tc.secret)
			defer fake.Close()
			tokenURL := fake.TokenURL()
			if tc.pact {
				tokenURL = fake.PACTTokenURL()
			}
			c := newClient(t, tokenURL, fake.APIURL(), func(o *altruistiq.Options) {
				o.AuthStyle = tc.style
				o.ClientSecret = tc.secret
			})
			tok, err := c.Token(context.Background(), nil)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				assertNoCredentials(t, err, tc.secret)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tok.TokenType != "Bearer" || time.Until(tok.Expiry) < 59*time.Minute || time.Until(tok.Expiry) > time.Hour {
				t.Fatalf("token type %q, expires in %s", tok.TokenType, time.Until(tok.Expiry))
			}
			if err := c.CheckToken(context.Background(), tok.AccessToken); err != nil {
				t.Fatalf("CheckToken: %v", err)
			}
		})
	}
}

func TestTokenSharedAcrossCallers(t *testing.T) {
	fake := newFake(t)
	fake.SetLatency(100 * time.Millisecond) // callers pile up behind the one fetch
	c := newClient(t, fake.TokenURL(), fake.APIURL(), nil)

	const callers = 100
	var wg sync.WaitGroup
	tokens := make([]string, callers)
	for i := range tokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := c.Token(context.Background(), []string{"read"})
			if err != nil {
				t.Error(err)
			}
			tokens[i] = tok.AccessToken
		}()
	}
	wg.Wait()
	for _, tok := range tokens {
		if tok == "" || tok != tokens[0] {
			t.Fatal("callers got different tokens")
		}
	}
	if n := fake.TokenCalls(); n != 1 {
		t.Fatalf("%d upstream token calls for %d concurrent callers, want 1", n, callers)
	}

	// Later callers reuse it too.
	again, err := c.Token(context.Background(), []string{"read"})
	if err != nil || again.AccessToken != tokens[0] || fake.TokenCalls() != 1 {
		t.Fatalf("token not reused: %v, %d calls", err, fake.TokenCalls())
	}
}

func TestTokenPerScopeSet(t *testing.T) {
	fake := newFake(t)
	c := newClient(t, fake.TokenURL(), fake.APIURL(), func(o *altruistiq.Options) { o.Scopes = []string{"default"} })

	tests := []struct {
		name       string
		scopes     []string
		sameAs     string // name of an earlier case that must share the token, or ""
		wantScopes string // as the upstream received them
	}{
		{"default scopes", nil, "", "default"},
		{"empty is the default", []string{}, "default scopes", "default"},
		{"read", []string{"read"}, "", "read"},
		{"write", []string{"write"}, "", "write"},
		{"read and write", []string{"read", "write"}, "", "read write"},
		{"write and read, reordered", []string{"write", "read", "read"}, "read and write", "read write"},
		{"read and write, space separated", []string{"write read"}, "read and write", "read write"},
	}
	seen := map[string]string{} // case name -> token
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			calls := fake.TokenCalls()
			tok, err := c.Token(context.Background(), tc.scopes)
			if err != nil {
				t.Fatal(err)
			}
			seen[tc.name] = tok.AccessToken
			if tc.sameAs != "" {
				if tok.AccessToken != seen[tc.sameAs] || fake.TokenCalls() != calls {
					t.Fatalf("scope set %q did not share the token of %q", tc.scopes, tc.sameAs)
				}
				return
			}
			for name, other := range seen {
				if name != tc.name && other == tok.AccessToken {
					t.Fatalf("scope set %q shares the token of %q", tc.scopes, name)
				}
			}
			if got := strings.Join(fake.LastScopes(), " "); got != tc.wantScopes {
				t.Fatalf("upstream got scopes %q, want %q", got, tc.wantScopes)
			}
		})
	}
}

func TestTokenRefreshedInsideEarlyExpiry(t *testing.T) {
	fake := newFake(t)
	fake.SetTokenLifetime(2 * time.Second)
	c := newClient(t, fake.TokenURL(), fake.APIURL(), func(o *altruistiq.Options) { o.EarlyExpiry = time.Second })

	first, err := c.Token(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := c.Token(context.Background(), nil); again.AccessToken != first.AccessToken {
		t.Fatal("fresh token not reused")
	}
	time.Sleep(1100 * time.Millisecond) // now inside the early-expiry window
	later, err := c.Token(context.Background(), nil)
	if err != nil || later.AccessToken == first.AccessToken {
		t.Fatalf("token not refreshed inside the early-expiry window (%v)", err)
	}
	if !fake.ValidToken(later.AccessToken) || !later.Expiry.After(first.Expiry) {
		t.Fatal("refreshed token is not valid or does not expire later")
	}
	if n := fake.TokenCalls(); n != 2 {
		t.Fatalf("%d token calls, want 2", n)
	}
}

func TestTokenErrorsFromFake(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(*altruistiqtest.Server)
		secret    string
		wantIs    error
		wantText  string
		wantCalls int
	}{
		{"wrong secret", nil, "wrong-secret", altruistiq.ErrUnauthorized, "altruistiq: token: 401 Unauthorized: Unauthorized", 1},
		{"garbage JSON", func(s *altruistiqtest.Server) { s.SetGarbage(true) }, clientSecret, nil, "invalid token response: not a JSON object", 1},
		{"503 exhausts retries", func(s *altruistiqtest.Server) { s.FailNext(5, http.StatusServiceUnavailable) }, clientSecret, nil, "503 Service Unavailable", 2},
		{"403 is not retried", func(s *altruistiqtest.Server) { s.FailNext(5, http.StatusForbidden) }, clientSecret, altruistiq.ErrForbidden, "403 Forbidden", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFake(t)
			if tc.setup != nil {
				tc.setup(fake)
			}
			c := newClient(t, fake.TokenURL(), fake.APIURL(), func(o *altruistiq.Options) { o.ClientSecret = tc.secret; o.MaxRetries = 1 })
			_, err := c.Token(context.Background(), nil)
			if err == nil || (tc.wantIs != nil && !errors.Is(err, tc.wantIs)) || !strings.Contains(err.Error(), tc.wantText) {
				t.Fatalf("err = %v, want %v containing %q", err, tc.wantIs, tc.wantText)
			}
			var aqErr *altruistiq.Error
			if !errors.As(err, &aqErr) {
				t.Fatalf("err is %T, want *altruistiq.Error", err)
			}
			assertNoCredentials(t, err, tc.secret)
			if n := fake.TokenCalls(); n != tc.wantCalls {
				t.Fatalf("%d token calls, want %d", n, tc.wantCalls)
			}
		})
	}
}

func TestTokenRetries(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		failures   int
		maxRetries int
		wantCalls  int
	}{
		{"503 then success", http.StatusServiceUnavailable, 1, 2, 2},
		{"502 twice then success", http.StatusBadGateway, 2, 2, 3},
		// A 429 is waited out (Retry-After: 1) and does not count.
		{"429 with no retries left", http.StatusTooManyRequests, 1, 0, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFake(t)
			fake.FailNext(tc.failures, tc.status)
			c := newClient(t, fake.TokenURL(), fake.APIURL(), func(o *altruistiq.Options) { o.MaxRetries = tc.maxRetries })
			if _, err := c.Token(context.Background(), nil); err != nil {
				t.Fatal(err)
			}
			if n := fake.TokenCalls(); n != tc.wantCalls {
				t.Fatalf("%d token calls, want %d", n, tc.wantCalls)
			}
		})
	}
}

func TestTokenHonoursContext(t *testing.T) {
	fake := newFake(t)
	fake.SetLatency(500 * time.Millisecond)
	c := newClient(t, fake.TokenURL(), fake.APIURL(), nil)

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Token(cancelled, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if n := fake.TokenCalls(); n != 0 {
		t.Fatalf("a cancelled call sent %d token requests", n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := c.Token(ctx, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 300*time.Millisecond {
		t.Fatalf("call past its deadline took %s", d)
	}

	// The abandoned fetch goes on; the next caller gets its token.
	if _, err := c.Token(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if n := fake.TokenCalls(); n != 1 {
		t.Fatalf("%d token calls, want the abandoned one only", n)
	}
}

func TestTokenAttemptTimeout(t *testing.T) {
	fake := newFake(t)
	fake.SetLatency(time.Second)
	c := newClient(t, fake.TokenURL(), fake.APIURL(), func(o *altruistiq.Options) {
		o.Timeout = 100 * time.Millisecond
		o.MaxRetries = 0
	})
	_, err := c.Token(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "no answer within the request timeout (100ms)") {
		t.Fatalf("err = %v, want a request timeout", err)
	}
}

func TestRateLimitPacesRequests(t *testing.T) {
	fake := newFake(t)
	c := newClient(t, fake.TokenURL(), fake.APIURL(), func(o *altruistiq.Options) { o.RateLimit = 10 })
	start := time.Now()
	for _, scope := range []string{"a", "b", "c", "d"} {
		if _, err := c.Token(context.Background(), []string{scope}); err != nil {
			t.Fatal(err)
		}
	}
	// Four requests at 10/s with a burst of one: at least three gaps of 100ms.
	if d := time.Since(start); d < 280*time.Millisecond {
		t.Fatalf("4 requests at 10/s took %s", d)
	}
}

func TestVerify(t *testing.T) {
	fake := newFake(t)
	c := newClient(t, fake.TokenURL(), fake.APIURL(), nil)

	if err := c.Verify(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Verify seeds the cache.
	if _, err := c.Token(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if n := fake.TokenCalls(); n != 1 {
		t.Fatalf("%d token calls after Verify and Token, want 1", n)
	}

	// A cached token proves nothing about a rotated secret: Verify asks.
	fake.SetClientSecret("rotated")
	err := c.Verify(context.Background())
	if !errors.Is(err, altruistiq.ErrUnauthorized) {
		t.Fatalf("Verify after rotation: err = %v, want ErrUnauthorized", err)
	}
	assertNoCredentials(t, err)
}

func TestCheckToken(t *testing.T) {
	fake := newFake(t)
	c := newClient(t, fake.TokenURL(), fake.APIURL(), nil)
	tok, err := c.Token(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		token   string
		wantErr error // nil: success
		anyErr  bool
	}{
		{"issued token", tok.AccessToken, nil, false},
		{"unknown token", "atq_not_a_token", altruistiq.ErrUnauthorized, true},
		{"empty token", "", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := c.CheckToken(context.Background(), tc.token)
			if (err != nil) != tc.anyErr || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				assertNoCredentials(t, err, tc.token)
			}
		})
	}
}

// stubTransport answers every request with one canned response.
type stubTransport struct {
	status int
	header http.Header
	body   string

	mu    sync.Mutex
	calls int
}

func (s *stubTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		_ = req.Body.Close()
	}
	s.mu.Lock()
	s.calls++
	s.mu.Unlock()
	header := s.header.Clone()
	if header == nil {
		header = http.Header{"Content-Type": {"application/json"}}
	}
	return &http.Response{
		StatusCode: s.status,
		Header:     header,
		Body:       io.NopCloser(strings.NewReader(s.body)),
		Request:    req,
	}, nil
}

func TestTokenAnswers(t *testing.T) {
	long := strings.Repeat("x", 1000)
	tests := []struct {
		name     string
		stub     *stubTransport
		wantErr  string // "": success
		wantIs   error
		lifetime time.Duration // of a successful token, ±2s
	}{
		{
			name:     "no expires_in gets the default lifetime",
			stub:     &stubTransport{status: 200, body: `{"access_token":"t1","token_type":"bearer"}`},
			lifetime: 5 * time.Minute,
		},
		{
			name:     "expires_in 0 gets the default lifetime",
			stub:     &stubTransport{status: 200, body: `{"access_token":"t1","token_type":"Bearer","expires_in":0}`},
			lifetime: 5 * time.Minute,
		},
		{
			name:     "form-encoded answer",
			stub:     &stubTransport{status: 200, header: http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, body: "access_token=t1&token_type=bearer&expires_in=600"},
			lifetime: 10 * time.Minute,
		},
		{
			name:    "negative expires_in",
			stub:    &stubTransport{status: 200, body: `{"access_token":"t1","token_type":"Bearer","expires_in":-5}`},
			wantErr: "altruistiq: token: 200 OK: invalid token response: the token has already expired",
		},
		{
			name:    "no access token",
			stub:    &stubTransport{status: 200, body: `{"token_type":"Bearer","expires_in":60}`},
			wantErr: "invalid token response: no access_token",
		},
		{
			name:    "HTML success page",
			stub:    &stubTransport{status: 200, header: http.Header{"Content-Type": {"text/html"}}, body: "<html>" + clientSecret + "</html>"},
			wantErr: "invalid token response: not a JSON object",
		},
		{
			name:    "RFC 6749 error",
			stub:    &stubTransport{status: 400, body: `{"error":"invalid_scope","error_description":"Scope not allowed"}`},
			wantErr: "altruistiq: token: 400 Bad Request: Scope not allowed (invalid_scope)",
		},
		{
			name:    "RFC 6749 error code only, answered with 200",
			stub:    &stubTransport{status: 200, body: `{"error":"invalid_client"}`},
			wantErr: "altruistiq: token: 200 OK: invalid_client",
		},
		{
			name:    "form-encoded error",
			stub:    &stubTransport{status: 401, header: http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, body: "error=invalid_client"},
			wantErr: "altruistiq: token: 401 Unauthorized: invalid_client",
			wantIs:  altruistiq.ErrUnauthorized,
		},
		{
			name:    "error echoing the credentials",
			stub:    &stubTransport{status: 401, body: `{"status":"bad secret ` + clientSecret + ` for ` + clientID + `"}`},
			wantErr: "401 Unauthorized: " + upstream.Withheld,
			wantIs:  altruistiq.ErrUnauthorized,
		},
		{
			name:    "error body that is not JSON",
			stub:    &stubTransport{status: 502, header: http.Header{"Content-Type": {"text/html"}}, body: "<html>" + clientSecret + "</html>"},
			wantErr: "altruistiq: token: 502 Bad Gateway",
		},
		{
			name:    "long message is cut short",
			stub:    &stubTransport{status: 403, body: `{"message":"` + long + `"}`},
			wantErr: "403 Forbidden: " + strings.Repeat("x", upstream.MaxBriefLength-3) + "...",
			wantIs:  altruistiq.ErrForbidden,
		},
		{
			name:    "redirect is not followed",
			stub:    &stubTransport{status: 307, header: http.Header{"Location": {"https://elsewhere.example/token"}}},
			wantErr: "altruistiq: token: 307 Temporary Redirect: redirected to https://elsewhere.example/token",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, "https://aq.example/oauth2/token", "https://aq.example/api", func(o *altruistiq.Options) {
				o.Transport = tc.stub
				o.MaxRetries = 0
			})
			tok, err := c.Token(context.Background(), nil)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if tok.AccessToken != "t1" || tok.TokenType != "Bearer" {
					t.Fatalf("token = %+v", tok)
				}
				if d := time.Until(tok.Expiry) - tc.lifetime; d > 2*time.Second || d < -2*time.Second {
					t.Fatalf("token expires in %s, want %s", time.Until(tok.Expiry), tc.lifetime)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Fatalf("err = %v, want %v", err, tc.wantIs)
			}
			var aqErr *altruistiq.Error
			if !errors.As(err, &aqErr) || len(aqErr.Message) > 300 {
				t.Fatalf("err = %#v, want an *altruistiq.Error with a short message", err)
			}
			assertNoCredentials(t, err)
			if tc.stub.calls != 1 {
				t.Fatalf("%d requests, want 1", tc.stub.calls)
			}
		})
	}
}

func TestCheckTokenRateLimitedPastDeadline(t *testing.T) {
	stub := &stubTransport{status: http.StatusTooManyRequests, header: http.Header{"Retry-After": {"5"}}, body: `{"status":"Too Many Requests"}`}
	c := newClient(t, "https://aq.example/oauth2/token", "https://aq.example/api", func(o *altruistiq.Options) { o.Transport = stub })
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	// Waiting 5s would pass the deadline: the 429 is the answer, at once.
	err := c.CheckToken(ctx, "atq_token")
	if !errors.Is(err, altruistiq.ErrRateLimited) || ctx.Err() != nil {
		t.Fatalf("err = %v, want ErrRateLimited before the deadline", err)
	}
	if stub.calls != 1 {
		t.Fatalf("%d requests, want 1", stub.calls)
	}
}

// TestEchoedCredentials: a token endpoint (and an API) that echoes the
// request in its error answers, as altruistiqtest's SetEchoRequest does,
// shows no form of the credentials in the client's error: the message is
// withheld, the status stays.
func TestEchoedCredentials(t *testing.T) {
	const oddSecret = `echo s3cr3t/+&"<é>=%`
	tests := []struct {
		name   string
		id     string
		secret string
		pact   bool
		style  string
		fault  int // 0: the fake refuses a wrong secret
	}{
		{"params, wrong secret", clientID, "ATQ-SECRET-REFLECT-7", false, altruistiq.AuthStyleParams, 0},
		{"header, wrong secret", "cid", "ATQ-SECRET-REFLECT-7", true, altruistiq.AuthStyleHeader, 0},
		{"params, secret that needs encoding", clientID, oddSecret, false, altruistiq.AuthStyleParams, 0},
		{"header, secret that needs encoding", "client id/1", oddSecret, true, altruistiq.AuthStyleHeader, 0},
		{"params, right secret refused", clientID, clientSecret, false, altruistiq.AuthStyleParams, http.StatusUnauthorized},
		{"header, right secret refused", clientID, clientSecret, true, altruistiq.AuthStyleHeader, http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFake(t)
			fake.SetEchoRequest(true)
			if tc.fault != 0 {
				fake.FailNext(1, tc.fault)
			}
			tokenURL := fake.TokenURL()
			if tc.pact {
				tokenURL = fake.PACTTokenURL()
			}
			c := newClient(t, tokenURL, fake.APIURL(), func(o *altruistiq.Options) {
				o.ClientID, o.ClientSecret, o.AuthStyle = tc.id, tc.secret, tc.style
			})
			_, err := c.Token(context.Background(), nil)
			var aqErr *altruistiq.Error
			if !errors.As(err, &aqErr) || aqErr.StatusCode < 400 || aqErr.Message != upstream.Withheld {
				t.Fatalf("err = %v, want a 4xx with the message withheld", err)
			}
			testutil.NoEncodedSecrets(t, err.Error(), tc.secret)
			for _, f := range testutil.BasicEncodings(tc.id, tc.secret) {
				testutil.NoSecrets(t, err.Error(), f.Text)
			}
		})
	}

	t.Run("API echoing the access token", func(t *testing.T) {
		fake := newFake(t)
		c := newClient(t, fake.TokenURL(), fake.APIURL(), nil)
		fake.SetEchoRequest(true)
		const stale = "atq_stale_token_value"
		err := c.CheckToken(context.Background(), stale)
		if !errors.Is(err, altruistiq.ErrUnauthorized) || !strings.Contains(err.Error(), "[redacted]") {
			t.Fatalf("err = %v, want a 401 with the token redacted", err)
		}
		testutil.NoEncodedSecrets(t, err.Error(), stale, clientSecret)
	})
}
