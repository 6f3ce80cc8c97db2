package carbon

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestRenderKeyName(t *testing.T) {
	tests := []struct {
		name     string
		template string
		data     keyNameData
		want     string
		wantErr  bool
	}{
		{"default", defaultKeyNameTemplate, keyNameData{"ci", "token-deploy"}, "ci-token-deploy", false},
		{"unsafe characters replaced", "{{ .DisplayName }}", keyNameData{"ci", "oidc-alice@example.com"}, "oidc-alice-example-com", false},
		{"control characters replaced", "{{ .DisplayName }}", keyNameData{"ci", "a\nb\x00c"}, "a-b-c", false},
		{"long names cut", "{{ .RoleName }}", keyNameData{strings.Repeat("r", 200), ""}, strings.Repeat("r", maxRenderedNameLength), false},
		{"sdk functions available", "{{ .RoleName | uppercase }}", keyNameData{"ci", ""}, "CI", false},
		{"broken template", "{{ .RoleName ", keyNameData{}, "", true},
		{"unknown field", "{{ .Nope }}", keyNameData{}, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := renderKeyName(tc.template, tc.data)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestKeyNameRoundTrip(t *testing.T) {
	now := time.Unix(1795000000, 0)
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		name, err := newKeyName("abcd1234", now, "ci-token")
		if err != nil {
			t.Fatal(err)
		}
		if seen[name] {
			t.Fatalf("duplicate name %q", name)
		}
		seen[name] = true
		marker, created, ok := parseKeyName(name)
		if !ok || marker != "abcd1234" || !created.Equal(now) || !strings.HasSuffix(name, "-ci-token") {
			t.Fatalf("parseKeyName(%q) = %q %v %v", name, marker, created, ok)
		}
	}
	for _, foreign := range []string{"", "my-key", "vault-ABCDEFGH-1795000000-abcdef-x", "vault-abcd1234-notatime-abcdef-x", "vault-abcd1234-1795000000"} {
		if _, _, ok := parseKeyName(foreign); ok {
			t.Errorf("parseKeyName(%q) claimed a foreign name", foreign)
		}
	}
}

func TestMountMarkerPersists(t *testing.T) {
	s := &logical.InmemStorage{}
	b1 := newBackend()
	m1, err := b1.mountMarker(context.Background(), s)
	if err != nil || len(m1) != markerLength {
		t.Fatalf("marker %q, %v", m1, err)
	}
	// A restarted plugin (new backend, same storage) keeps the marker.
	b2 := newBackend()
	if m2, _ := b2.mountMarker(context.Background(), s); m2 != m1 {
		t.Fatalf("marker changed across restart: %q -> %q", m1, m2)
	}
}
