package testutil

import (
	"errors"
	"testing"
)

// recorder is a testing.TB that notes failures instead of stopping.
type recorder struct {
	testing.TB
	failed bool
}

func (r *recorder) Helper()               {}
func (r *recorder) Fatalf(string, ...any) { r.failed = true }
func (r *recorder) Fatal(...any)          { r.failed = true }
func (r *recorder) Cleanup(f func())      { r.TB.Cleanup(f) }

func TestNoSecrets(t *testing.T) {
	tests := []struct {
		name     string
		text     string
		secrets  []string
		wantFail bool
	}{
		{"clean", "bad key [redacted]", []string{"s3cr3t"}, false},
		{"leak", "bad key s3cr3t", []string{"", "s3cr3t"}, true},
		{"empty secret matches nothing", "anything", []string{""}, false},
	}
	for _, tc := range tests {
		r := &recorder{TB: t}
		NoSecrets(r, tc.text, tc.secrets...)
		if r.failed != tc.wantFail {
			t.Errorf("%s: failed = %v, want %v", tc.name, r.failed, tc.wantFail)
		}
	}
}

func TestNoEncodedSecrets(t *testing.T) {
	tests := []struct {
		name     string
		text     string
		wantFail bool
	}{
		{"clean", "bad key [redacted]", false},
		{"literal", `bad key a b/c"d`, true},
		{"query-escaped", "client_secret=a+b%2Fc%22d", true},
		{"path-escaped", "a%20b%2Fc%22d", true},
		{"JSON-escaped", `"a b/c\"d"`, true},
		{"base64", "Basic YSBiL2MiZA==", true},
		{"raw url base64", "YSBiL2MiZA", true},
	}
	for _, tc := range tests {
		r := &recorder{TB: t}
		NoEncodedSecrets(r, tc.text, `a b/c"d`)
		if r.failed != tc.wantFail {
			t.Errorf("%s: failed = %v, want %v", tc.name, r.failed, tc.wantFail)
		}
	}
}

type closer struct{ closed *bool }

func (c closer) Close() { *c.closed = true }

func TestNewClient(t *testing.T) {
	var closed bool
	t.Run("built, mutated and closed", func(t *testing.T) {
		got := NewClient(t, func(n int) (closer, error) {
			if n != 2 {
				t.Fatalf("options %d, want the mutated 2", n)
			}
			return closer{&closed}, nil
		}, 1, func(n *int) { *n = 2 })
		if *got.closed {
			t.Fatal("closed before the test ended")
		}
	})
	if !closed {
		t.Fatal("not closed when the test ended")
	}
	r := &recorder{TB: t}
	var unused bool // a recorder does not stop at Fatal: the cleanup still runs
	NewClient(r, func(int) (closer, error) { return closer{&unused}, errors.New("bad options") }, 0, nil)
	if !r.failed {
		t.Fatal("an error from the constructor did not fail the test")
	}
}
