package altruistiqtest

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testID     = "client-1"
	testSecret = "s3cr3t"
)

type reply struct {
	status int
	header http.Header
	fields map[string]any // nil when the body is not a JSON object
	body   string
}

// post sends a token request; basicID/basicSecret, when set, go in an
// RFC 6749 §2.3.1 Basic header.
func post(target string, form url.Values, basicID, basicSecret string) (reply, error) {
	req, err := http.NewRequest(http.MethodPost, target, strings.NewReader(form.Encode()))
	if err != nil {
		return reply{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basicID != "" {
		req.SetBasicAuth(url.QueryEscape(basicID), url.QueryEscape(basicSecret))
	}
	return do(req)
}

func get(target, bearer string) (reply, error) {
	req, err := http.NewRequest(http.MethodGet, target, nil)
	if err != nil {
		return reply{}, err
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	return do(req)
}

func do(req *http.Request) (reply, error) {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, header: resp.Header, body: string(body)}
	_ = json.Unmarshal(body, &r.fields)
	return r, err
}

func mustPost(t *testing.T, target string, form url.Values, basicID, basicSecret string) reply {
	t.Helper()
	r, err := post(target, form, basicID, basicSecret)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustGet(t *testing.T, target, bearer string) reply {
	t.Helper()
	r, err := get(target, bearer)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func bodyCredentials(id, secret string) url.Values {
	return url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}}
}

func TestListensOnLoopback(t *testing.T) {
	s := NewServer(testID, testSecret)
	defer s.Close()
	if !strings.HasPrefix(s.URL(), "http://127.0.0.1:") {
		t.Fatalf("URL %s is not on 127.0.0.1", s.URL())
	}
	for got, want := range map[string]string{
		s.TokenURL():     s.URL() + "/api/public/v1/oauth2/token",
		s.PACTTokenURL(): s.URL() + "/auth/token",
		s.APIURL():       s.URL() + "/api/public/v1",
	} {
		if got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
	}
}

func TestTokenEndpoint(t *testing.T) {
	s := NewServer(testID, testSecret)
	defer s.Close()
	odd := "p+a/s=s&"
	oddServer := NewServer(testID, odd)
	defer oddServer.Close()

	tests := []struct {
		name         string
		url          string
		form         url.Values
		basicID      string
		basicSecret  string
		wantStatus   int
		wantField    string // a field of the answer ...
		wantValue    any    // ... and its value
		wantIssued   bool
		wantRawField string // for a success: a field clients do not know
	}{
		{"body credentials", s.TokenURL(), bodyCredentials(testID, testSecret), "", "", 200, "token_type", "Bearer", true, "issued_at"},
		{"expires_in defaults to an hour", s.TokenURL(), bodyCredentials(testID, testSecret), "", "", 200, "expires_in", float64(3600), true, ""},
		{"scope is echoed", s.TokenURL(), func() url.Values {
			f := bodyCredentials(testID, testSecret)
			f.Set("scope", "read write")
			return f
		}(), "", "", 200, "scope", "read write", true, ""},
		{"wrong secret", s.TokenURL(), bodyCredentials(testID, "nope"), "", "", 401, "status", "Unauthorized", false, ""},
		{"unknown client", s.TokenURL(), bodyCredentials("other", testSecret), "", "", 401, "status", "Unauthorized", false, ""},
		{"basic auth on the documented endpoint", s.TokenURL(), url.Values{"grant_type": {"client_credentials"}}, testID, testSecret, 401, "status", "Unauthorized", false, ""},
		{"wrong grant type", s.TokenURL(), url.Values{"grant_type": {"password"}, "client_id": {testID}, "client_secret": {testSecret}}, "", "", 400, "error", "unsupported_grant_type", false, ""},
		{"no grant type", s.TokenURL(), url.Values{"client_id": {testID}, "client_secret": {testSecret}}, "", "", 400, "error", "unsupported_grant_type", false, ""},
		{"PACT basic auth", s.PACTTokenURL(), url.Values{"grant_type": {"client_credentials"}}, testID, testSecret, 200, "token_type", "Bearer", true, ""},
		{"PACT basic auth, encoded secret", oddServer.PACTTokenURL(), url.Values{"grant_type": {"client_credentials"}}, testID, odd, 200, "token_type", "Bearer", true, ""},
		{"PACT body credentials", s.PACTTokenURL(), bodyCredentials(testID, testSecret), "", "", 401, "status", "Unauthorized", false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := mustPost(t, tc.url, tc.form, tc.basicID, tc.basicSecret)
			if r.status != tc.wantStatus || r.fields[tc.wantField] != tc.wantValue {
				t.Fatalf("got %d %s, want %d with %s=%v", r.status, r.body, tc.wantStatus, tc.wantField, tc.wantValue)
			}
			token, _ := r.fields["access_token"].(string)
			if (token != "") != tc.wantIssued {
				t.Fatalf("access_token %q, want issued=%v", token, tc.wantIssued)
			}
			if tc.wantIssued && !s.ValidToken(token) && !oddServer.ValidToken(token) {
				t.Fatal("issued token is not valid")
			}
			if tc.wantRawField != "" && r.fields[tc.wantRawField] == nil {
				t.Fatalf("answer %s lacks %s", r.body, tc.wantRawField)
			}
		})
	}
	if got := s.LastScopes(); len(got) != 0 {
		t.Fatalf("LastScopes = %v after a success without scopes", got)
	}
	if calls, issued := s.TokenCalls(), s.TokensIssued(); calls != 10 || issued != 4 {
		t.Fatalf("TokenCalls %d, TokensIssued %d; want 10 and 4", calls, issued)
	}
}

func TestFaults(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(*Server)
		wantCodes []int // of consecutive requests with good credentials
		check     func(*testing.T, reply)
	}{
		{"fail next", func(s *Server) { s.FailNext(2, 503) }, []int{503, 503, 200}, nil},
		{"429 carries Retry-After", func(s *Server) { s.FailNext(1, 429) }, []int{429, 200}, func(t *testing.T, r reply) {
			if r.status == 429 && r.header.Get("Retry-After") != "1" {
				t.Fatalf("429 without Retry-After: %v", r.header)
			}
		}},
		{"failure rate 1", func(s *Server) { s.SetFailureRate(1) }, []int{503, 503}, nil},
		{"garbage", func(s *Server) { s.SetGarbage(true) }, []int{200}, func(t *testing.T, r reply) {
			if json.Valid([]byte(r.body)) {
				t.Fatalf("garbage answer is valid JSON: %s", r.body)
			}
		}},
		{"rotated secret", func(s *Server) { s.SetClientSecret("new") }, []int{401}, nil},
		{"no lifetime", func(s *Server) { s.SetTokenLifetime(0) }, []int{200}, func(t *testing.T, r reply) {
			if _, ok := r.fields["expires_in"]; ok {
				t.Fatalf("answer has expires_in: %s", r.body)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewServer(testID, testSecret)
			defer s.Close()
			tc.setup(s)
			for i, want := range tc.wantCodes {
				r := mustPost(t, s.TokenURL(), bodyCredentials(testID, testSecret), "", "")
				if r.status != want {
					t.Fatalf("request %d: got %d %s, want %d", i, r.status, r.body, want)
				}
				if tc.check != nil {
					tc.check(t, r)
				}
			}
			if n := s.TokenCalls(); n != len(tc.wantCodes) {
				t.Fatalf("TokenCalls = %d, want %d", n, len(tc.wantCodes))
			}
		})
	}
}

func TestRotatedSecret(t *testing.T) {
	s := NewServer(testID, testSecret)
	defer s.Close()
	s.SetClientSecret("new")
	if r := mustPost(t, s.TokenURL(), bodyCredentials(testID, "new"), "", ""); r.status != 200 {
		t.Fatalf("new secret: %d %s", r.status, r.body)
	}
}

func TestOrganization(t *testing.T) {
	s := NewServer(testID, testSecret)
	defer s.Close()
	s.SetTokenLifetime(time.Second)
	r := mustPost(t, s.TokenURL(), bodyCredentials(testID, testSecret), "", "")
	token := r.fields["access_token"].(string)
	if r.fields["expires_in"] != float64(1) {
		t.Fatalf("expires_in = %v, want 1", r.fields["expires_in"])
	}

	tests := []struct {
		name       string
		bearer     string
		wantStatus int
	}{
		{"valid token", token, 200},
		{"no token", "", 401},
		{"unknown token", "atq_unknown", 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := mustGet(t, s.APIURL()+"/organization/", tc.bearer)
			if r.status != tc.wantStatus {
				t.Fatalf("got %d %s, want %d", r.status, r.body, tc.wantStatus)
			}
			if r.status == 200 && (r.fields["name"] != "Example Org" || !strings.HasPrefix(r.fields["id"].(string), "org_")) {
				t.Fatalf("organization = %s", r.body)
			}
			if r.status == 401 && r.fields["status"] != "Unauthorized" {
				t.Fatalf("401 body = %s", r.body)
			}
		})
	}

	time.Sleep(1100 * time.Millisecond)
	if s.ValidToken(token) {
		t.Fatal("token valid past its lifetime")
	}
	if r := mustGet(t, s.APIURL()+"/organization/", token); r.status != 401 {
		t.Fatalf("expired token: got %d", r.status)
	}
}

func TestConcurrentTokenRequests(t *testing.T) {
	s := NewServer(testID, testSecret)
	defer s.Close()
	const n = 50
	var wg sync.WaitGroup
	tokens := make(chan string, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := post(s.TokenURL(), bodyCredentials(testID, testSecret), "", "")
			if err != nil || r.status != 200 {
				t.Errorf("got %d, %v", r.status, err)
				return
			}
			tokens <- r.fields["access_token"].(string)
		}()
	}
	wg.Wait()
	close(tokens)
	distinct := map[string]bool{}
	for tok := range tokens {
		distinct[tok] = true
	}
	if len(distinct) != n || s.TokensIssued() != n || s.TokenCalls() != n {
		t.Fatalf("%d distinct tokens, %d issued, %d calls; want %d each", len(distinct), s.TokensIssued(), s.TokenCalls(), n)
	}
}

func TestEchoRequest(t *testing.T) {
	const secret = "echo s3cr3t/+&"
	s := NewServer(testID, secret)
	defer s.Close()
	s.SetEchoRequest(true)
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(testID+":"+url.QueryEscape(secret)))
	tests := []struct {
		name       string
		target     func() reply
		wantStatus int
		wantEcho   []string // in the message
	}{
		{"params: the URL-encoded secret", func() reply {
			return mustPost(t, s.PACTTokenURL(), bodyCredentials(testID, secret), "", "")
		}, 401, []string{"client_secret=" + url.QueryEscape(secret), `"body":"client_id=` + testID}},
		{"header: the Basic header", func() reply {
			return mustPost(t, s.TokenURL(), url.Values{"grant_type": {"client_credentials"}}, testID, secret)
		}, 401, []string{"Authorization: " + basic, `"Authorization":["` + basic + `"]`}},
		{"faults echo too", func() reply {
			s.FailNext(1, http.StatusServiceUnavailable)
			return mustPost(t, s.TokenURL(), bodyCredentials(testID, secret), "", "")
		}, 503, []string{url.QueryEscape(secret)}},
		{"the API echoes the bearer token", func() reply { return mustGet(t, s.APIURL()+"/organization/", "atq_stale") }, 401, []string{"Bearer atq_stale"}},
		{"successes do not", func() reply { return mustPost(t, s.TokenURL(), bodyCredentials(testID, secret), "", "") }, 200, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.target()
			msg, _ := r.fields["message"].(string)
			if r.status != tc.wantStatus || (len(tc.wantEcho) > 0) != (r.fields["request"] != nil) {
				t.Fatalf("got %d %s, want %d with an echo: %v", r.status, r.body, tc.wantStatus, len(tc.wantEcho) > 0)
			}
			for _, want := range tc.wantEcho {
				if !strings.Contains(msg, want) {
					t.Fatalf("message %q lacks %q", msg, want)
				}
			}
		})
	}
	s.SetEchoRequest(false)
	if r := mustPost(t, s.TokenURL(), bodyCredentials(testID, "wrong"), "", ""); r.status != 401 || strings.Contains(r.body, "wrong") {
		t.Fatalf("echo off: %d %s", r.status, r.body)
	}
}
