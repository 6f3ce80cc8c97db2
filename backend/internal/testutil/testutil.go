// Package testutil holds what the clients' tests share.
package testutil

import (
	"strings"
	"testing"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/internal/leakcheck"
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

// NoEncodedSecrets fails t when text carries one of secrets in any of the
// forms leakcheck.Encodings lists.
func NoEncodedSecrets(t testing.TB, text string, secrets ...string) {
	t.Helper()
	if found := leakcheck.Find(text, leakcheck.All(secrets...)); len(found) > 0 {
		t.Fatalf("text carries a secret, %s: %q", strings.Join(found, ", "), text)
	}
}

// Encodings are leakcheck.Encodings of secret.
func Encodings(secret string) []leakcheck.Form { return leakcheck.Encodings(secret) }

// BasicEncodings are leakcheck.BasicEncodings of id:secret.
func BasicEncodings(id, secret string) []leakcheck.Form { return leakcheck.BasicEncodings(id, secret) }

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
