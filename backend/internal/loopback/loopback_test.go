package loopback

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestNewServerListensOnLoopback(t *testing.T) {
	srv := NewServer("test", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "hello")
	}))
	defer srv.Close()
	if !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
		t.Fatalf("URL %s is not on 127.0.0.1", srv.URL)
	}
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if body, _ := io.ReadAll(resp.Body); string(body) != "hello" {
		t.Fatalf("body %q", body)
	}
}
