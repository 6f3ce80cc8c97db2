package keyname

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	at := time.Unix(1795000000, 0)
	tests := []struct {
		name       string
		in         string
		wantMarker string
		wantOK     bool
	}{
		{"with rest", "vault-abcd1234-1795000000-x1y2z3-ci-token", "abcd1234", true},
		{"without rest", "vault-abcd1234-1795000000-x1y2z3", "abcd1234", true},
		{"empty", "", "", false},
		{"hand-made", "my-key", "", false},
		{"upper-case marker", "vault-ABCD1234-1795000000-x1y2z3-x", "", false},
		{"short marker", "vault-abcd123-1795000000-x1y2z3-x", "", false},
		{"time not a number", "vault-abcd1234-notatime-x1y2z3-x", "", false},
		{"time with a leading zero", "vault-abcd1234-0795000000-x1y2z3-x", "", false},
		{"no nonce", "vault-abcd1234-1795000000", "", false},
		{"long nonce", "vault-abcd1234-1795000000-x1y2z3q-x", "", false},
		{"prefix not at start", "x-vault-abcd1234-1795000000-x1y2z3-x", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			marker, created, ok := Parse(tc.in)
			if ok != tc.wantOK || marker != tc.wantMarker {
				t.Fatalf("Parse(%q) = %q, %v; want %q, %v", tc.in, marker, ok, tc.wantMarker, tc.wantOK)
			}
			if ok && !created.Equal(at) {
				t.Fatalf("Parse(%q) created %v, want %v", tc.in, created, at)
			}
		})
	}
}

func TestFormatRoundTrip(t *testing.T) {
	at := time.Unix(1795000000, 0)
	tests := []struct {
		name, marker, nonce, rest string
		want                      string
		wantErr                   bool
	}{
		{"with rest", "abcd1234", "x1y2z3", "ci-token", "vault-abcd1234-1795000000-x1y2z3-ci-token", false},
		{"without rest", "abcd1234", "x1y2z3", "", "vault-abcd1234-1795000000-x1y2z3", false},
		{"bad marker", "ABCD1234", "x1y2z3", "", "", true},
		{"short marker", "abc", "x1y2z3", "", "", true},
		{"bad nonce", "abcd1234", "x1-2z3", "", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Format(tc.marker, at, tc.nonce, tc.rest)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("Format = %q, %v; want %q (error: %v)", got, err, tc.want, tc.wantErr)
			}
			if err != nil {
				return
			}
			marker, created, ok := Parse(got)
			if !ok || marker != tc.marker || !created.Equal(at) || !strings.HasSuffix(got, tc.rest) {
				t.Fatalf("Parse(%q) = %q %v %v", got, marker, created, ok)
			}
		})
	}
}

func TestValidMarker(t *testing.T) {
	for in, want := range map[string]bool{
		"abcd1234": true, "00000000": true, "abcd123": false, "abcd12345": false, "abcd-234": false, "ABCD1234": false, "": false,
	} {
		if got := ValidMarker(in); got != want {
			t.Errorf("ValidMarker(%q) = %v, want %v", in, got, want)
		}
	}
}

// FuzzParse: Parse never panics, and whatever it accepts formats back to
// the same prefix.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{"vault-abcd1234-1795000000-x1y2z3-ci", "vault-", "", "vault-abcd1234-999999999999-aaaaaa"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, name string) {
		marker, created, ok := Parse(name)
		if !ok {
			return
		}
		secs := strconv.FormatInt(created.Unix(), 10)
		start := len("vault-") + MarkerLength + 1 + len(secs) + 1
		prefix, err := Format(marker, created, name[start:start+NonceLength], "")
		if err != nil || !strings.HasPrefix(name, prefix) {
			t.Fatalf("Parse(%q) accepted a name whose prefix does not format back: %q, %v", name, prefix, err)
		}
	})
}
