package upstream

import (
	"strings"
	"testing"
	"unicode/utf8"
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
	// The added secret goes first: it may contain one of the others.
	r := NewRedactor("tok").With("token-tok", "")
	if got := r.Clean("token-tok and tok"); got != "[redacted] and [redacted]" {
		t.Fatalf("Clean = %q", got)
	}
	if len(r) != 2 {
		t.Fatalf("redactor holds %d secrets, want 2", len(r))
	}
}
