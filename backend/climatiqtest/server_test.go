package climatiqtest

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func get(t *testing.T, url, bearer string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+bearer)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func TestFakeAuthAndFaults(t *testing.T) {
	s := NewServer("mk")
	defer s.Close()
	if !strings.HasPrefix(s.URL(), "http://127.0.0.1:") {
		t.Fatalf("fake listens on %s, want 127.0.0.1", s.URL())
	}
	tests := []struct {
		name   string
		setup  func()
		bearer string
		want   int
	}{
		{"valid key", func() {}, "mk", http.StatusOK},
		{"unknown key", func() {}, "nope", http.StatusUnauthorized},
		{"injected 503", func() { s.FailNext(1, http.StatusServiceUnavailable) }, "mk", http.StatusServiceUnavailable},
		{"injected 404", func() { s.FailNext(1, http.StatusNotFound) }, "mk", http.StatusNotFound},
		{"failure rate 1", func() { s.SetFailureRate(1) }, "mk", http.StatusServiceUnavailable},
		{"failure rate 0", func() { s.SetFailureRate(0) }, "mk", http.StatusOK},
		{"revoked key", func() { s.RevokeManagementKey("mk") }, "mk", http.StatusUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.setup()
			if got := get(t, s.ManagementURL()+"/project", tc.bearer).StatusCode; got != tc.want {
				t.Fatalf("status %d, want %d", got, tc.want)
			}
		})
	}
}

func TestFakeRateCapSends429WithRetryAfter(t *testing.T) {
	s := NewServer("mk")
	defer s.Close()
	s.SetRateLimit(10)
	s.SetRetryAfter(2 * time.Second)
	limited := 0
	for i := 0; i < 20; i++ {
		resp := get(t, s.ManagementURL()+"/project", "mk")
		if resp.StatusCode == http.StatusTooManyRequests {
			limited++
			if resp.Header.Get("Retry-After") != "2" {
				t.Fatalf("Retry-After = %q", resp.Header.Get("Retry-After"))
			}
		}
	}
	if limited == 0 || s.Stats().RateLimited != limited {
		t.Fatalf("%d requests limited (stats %d); a burst of 20 at 10/s must hit the cap", limited, s.Stats().RateLimited)
	}
}

func TestFakeRegularAPI(t *testing.T) {
	s := NewServer("mk")
	defer s.Close()
	k := s.AddKey(s.AddProject("p").ID, "k")
	if got := get(t, s.APIURL()+"/data/v1/unit-types", k.Key).StatusCode; got != http.StatusOK {
		t.Fatalf("live key: %d", got)
	}
	if got := get(t, s.APIURL()+"/data/v1/unit-types", "sk_unknown").StatusCode; got != http.StatusUnauthorized {
		t.Fatalf("unknown key: %d", got)
	}
	if _, ok := s.KeyByValue(k.Key); !ok {
		t.Fatal("KeyByValue misses a live key")
	}
}
