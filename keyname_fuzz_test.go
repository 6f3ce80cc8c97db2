package carbon

import (
	"strings"
	"testing"
	"time"
)

var fixedTime = time.Unix(1795000000, 0)

// FuzzKeyNameTemplate: any template either fails to render cleanly or
// renders a name of safe characters within the length bound; it never
// panics.
func FuzzKeyNameTemplate(f *testing.F) {
	for _, seed := range []struct{ tmpl, role, display string }{
		{defaultKeyNameTemplate, "ci", "token-deploy"},
		{"{{ .RoleName | truncate 3 }}", "role", "x"},
		{"{{ .DisplayName | replace \"@\" \"-\" }}", "r", "oidc-alice@example.com"},
		{"{{ .RoleName ", "r", "d"},
		{"{{ .Nope }}", "r", "d"},
		{"{{ random 20 }}", "r", "d"},
		{"{{ unix_time }}-{{ uuid }}", "r", "d"},
		{"\x00\n{{ .DisplayName }}", "r", "d\u202e\u0000x"},
		{strings.Repeat("{{ .RoleName }}", 50), strings.Repeat("r", 100), ""},
	} {
		f.Add(seed.tmpl, seed.role, seed.display)
	}
	f.Fuzz(func(t *testing.T, tmpl, role, display string) {
		name, err := renderKeyName(tmpl, keyNameData{RoleName: role, DisplayName: display})
		if err != nil {
			return
		}
		if len(name) > maxRenderedNameLength {
			t.Fatalf("rendered name has %d characters", len(name))
		}
		if unsafeNameChars.MatchString(name) {
			t.Fatalf("rendered name %q has unsafe characters", name)
		}
		full, err := newKeyName("abcd1234", fixedTime, name)
		if err != nil {
			t.Fatal(err)
		}
		if marker, _, ok := parseKeyName(full); !ok || marker != "abcd1234" {
			t.Fatalf("the fixed prefix did not survive: %q", full)
		}
	})
}
