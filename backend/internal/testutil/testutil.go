// Package testutil holds what the clients' tests share.
package testutil

import (
	"strings"
	"testing"
)

// NoSecrets fails t when text carries one of secrets; empty ones are
// skipped.
func NoSecrets(t testing.TB, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Fatalf("text carries a secret: %q", text)
		}
	}
}

// NewClient builds a client from o, changed by mutate when it is not nil,
// and closes it when the test ends.
func NewClient[O any, C interface{ Close() }](t testing.TB, newClient func(O) (C, error), o O, mutate func(*O)) C {
	t.Helper()
	if mutate != nil {
		mutate(&o)
	}
	c, err := newClient(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}
