package altruistiq_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/altruistiq"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/altruistiqtest"
)

const (
	clientID     = "client-1"
	clientSecret = "client-s3cr3t"
)

func newClient(t *testing.T, tokenURL, apiURL string, mutate func(*altruistiq.Options)) *altruistiq.Client {
	t.Helper()
	o := altruistiq.Options{TokenURL: tokenURL, APIURL: apiURL, ClientID: clientID, ClientSecret: clientSecret, MaxRetries: 2}
	if mutate != nil {
		mutate(&o)
	}
	c, err := altruistiq.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestAuthStyles(t *testing.T) {
	fake := altruistiqtest.NewServer(clientID, clientSecret)
	defer fake.Close()
	tests := []struct {
		name     string
		tokenURL string
		style    string
		wantErr  error
	}{
		{"params on the documented endpoint", fake.TokenURL(), altruistiq.AuthStyleParams, nil},
		{"header on a PACT-style host", fake.PACTTokenURL(), altruistiq.AuthStyleHeader, nil},
		{"header on the documented endpoint", fake.TokenURL(), altruistiq.AuthStyleHeader, altruistiq.ErrUnauthorized},
		{"params on a PACT-style host", fake.PACTTokenURL(), altruistiq.AuthStyleParams, altruistiq.ErrUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, tc.tokenURL, fake.APIURL(), func(o *altruistiq.Options) { o.AuthStyle = tc.style })
			tok, err := c.Token(context.Background(), nil)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if tok.TokenType != "Bearer" || time.Until(tok.Expiry) < 59*time.Minute {
				t.Fatalf("token = %+v", tok)
			}
			if err := c.CheckToken(context.Background(), tok.AccessToken); err != nil {
				t.Fatalf("CheckToken: %v", err)
			}
		})
	}
}

func TestTokenSharedAcrossConcurrentCallers(t *testing.T) {
	fake := altruistiqtest.NewServer(clientID, clientSecret)
	defer fake.Close()
	fake.SetLatency(100 * time.Millisecond) // callers pile up behind the one fetch
	c := newClient(t, fake.TokenURL(), fake.APIURL(), nil)

	var wg sync.WaitGroup
	tokens := make([]string, 100)
	for i := range tokens {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			tok, err := c.Token(context.Background(), []string{"read"})
			if err != nil {
				t.Error(err)
			}
			tokens[i] = tok.AccessToken
		}(i)
	}
	wg.Wait()
	for _, tok := range tokens {
		if tok != tokens[0] {
			t.Fatal("callers got different tokens")
		}
	}
	if n := fake.TokenCalls(); n != 1 {
		t.Fatalf("%d upstream token calls for 100 concurrent callers, want 1", n)
	}

	// Another scope set is another token.
	other, err := c.Token(context.Background(), []string{"write"})
	if err != nil || other.AccessToken == tokens[0] {
		t.Fatalf("distinct scopes shared a token (%v)", err)
	}
	if got := fake.LastScopes(); len(got) != 1 || got[0] != "write" {
		t.Fatalf("scopes sent = %v", got)
	}
}

func TestTokenRefreshedBeforeExpiry(t *testing.T) {
	fake := altruistiqtest.NewServer(clientID, clientSecret)
	defer fake.Close()
	fake.SetTokenLifetime(3 * time.Second)
	c := newClient(t, fake.TokenURL(), fake.APIURL(), func(o *altruistiq.Options) { o.EarlyExpiry = 2 * time.Second })
	first, err := c.Token(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := c.Token(context.Background(), nil); again.AccessToken != first.AccessToken {
		t.Fatal("fresh token not reused")
	}
	time.Sleep(1200 * time.Millisecond) // now inside the early-expiry window
	later, err := c.Token(context.Background(), nil)
	if err != nil || later.AccessToken == first.AccessToken {
		t.Fatalf("token not refreshed inside the early-expiry window (%v)", err)
	}
}

func TestTokenErrors(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(*altruistiqtest.Server)
		secret  string
		wantIs  error
		wantMsg string
	}{
		{"wrong secret", nil, "wrong-secret", altruistiq.ErrUnauthorized, "Unauthorized"},
		{"garbage JSON", func(s *altruistiqtest.Server) { s.SetGarbage(true) }, clientSecret, nil, "invalid token response"},
		{"503 exhausts retries", func(s *altruistiqtest.Server) { s.FailNext(5, http.StatusServiceUnavailable) }, clientSecret, nil, "503"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := altruistiqtest.NewServer(clientID, clientSecret)
			defer fake.Close()
			if tc.setup != nil {
				tc.setup(fake)
			}
			c := newClient(t, fake.TokenURL(), fake.APIURL(), func(o *altruistiq.Options) { o.ClientSecret = tc.secret; o.MaxRetries = 1 })
			_, err := c.Token(context.Background(), nil)
			if err == nil || (tc.wantIs != nil && !errors.Is(err, tc.wantIs)) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("err = %v, want %v containing %q", err, tc.wantIs, tc.wantMsg)
			}
			for _, secret := range []string{tc.secret, clientID} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("error carries a credential: %v", err)
				}
			}
		})
	}
}

func TestTokenRetriedAfter503(t *testing.T) {
	fake := altruistiqtest.NewServer(clientID, clientSecret)
	defer fake.Close()
	fake.FailNext(1, http.StatusServiceUnavailable)
	c := newClient(t, fake.TokenURL(), fake.APIURL(), nil)
	if _, err := c.Token(context.Background(), nil); err != nil {
		t.Fatalf("503 then success: %v", err)
	}
	if n := fake.TokenCalls(); n != 2 {
		t.Fatalf("%d token calls, want 2", n)
	}
}

func TestTokenHonoursContext(t *testing.T) {
	fake := altruistiqtest.NewServer(clientID, clientSecret)
	defer fake.Close()
	fake.SetLatency(2 * time.Second)
	c := newClient(t, fake.TokenURL(), fake.APIURL(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := c.Token(ctx, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("cancelled call took %s", d)
	}
}

func TestCheckTokenRefusesUnknown(t *testing.T) {
	fake := altruistiqtest.NewServer(clientID, clientSecret)
	defer fake.Close()
	c := newClient(t, fake.TokenURL(), fake.APIURL(), nil)
	if err := c.CheckToken(context.Background(), "atq_not_a_token"); !errors.Is(err, altruistiq.ErrUnauthorized) {
		t.Fatalf("err = %v, want ErrUnauthorized", err)
	}
}
