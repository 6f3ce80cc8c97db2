package carbon

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/template"
	"github.com/hashicorp/vault/sdk/logical"
)

// TestKeyNameTemplateOutputIsBoundedWhileRendering: templates that multiply
// their output with text/template's builtins and variables are refused while
// they render, at the role write and at issuance, in bounded time and memory
// (before the fix, the first renders 1.28 GB and takes the plugin down).
func TestKeyNameTemplateOutputIsBoundedWhileRendering(t *testing.T) {
	args := func(arg string, n int) string { return strings.TrimSpace(strings.Repeat(" "+arg, n)) }
	verbs := strings.Repeat("%s", 10)
	tests := []struct {
		name     string
		template string
		fix      string // what the 400 must tell the operator
	}{
		{
			"print and a variable, tenfold per step, 1.28 GB",
			`{{ $a := print ` + args(".RoleName", 10) + ` }}` + strings.Repeat(`{{ $a = print `+args("$a", 10)+` }}`, 6) + `{{ $a }}`,
			"truncate",
		},
		{
			"printf into a variable never written, 128 MB",
			`{{ $a := printf "` + verbs + `" ` + args(".RoleName", 10) + ` }}` + strings.Repeat(`{{ $a = printf "`+verbs+`" `+args("$a", 10)+` }}`, 5),
			"truncate",
		},
		{
			"html escaper of a variable, fivefold per step, 50 MB",
			`{{ $a := .RoleName }}` + strings.Repeat(`{{ $a = html `+args("$a", 5)+` }}`, 8),
			"truncate",
		},
		{
			"printf widths pad a megabyte each, 30 MB",
			`{{ printf "` + strings.Repeat("%01000000d", 30) + `" ` + args("0", 30) + ` }}`,
			"width",
		},
		{
			"bounded values written past the output bound",
			`{{ $a := .DisplayName }}` + strings.Repeat(`{{ $a }}`, 17),
			"render less",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.template) > maxTemplateLength {
				t.Fatalf("the template has %d characters, more than a role accepts", len(tc.template))
			}
			assertBounded(t, "rendering", func() {
				if name, err := renderKeyName(tc.template, longestKeyNameData); err == nil {
					t.Errorf("rendered without an error (%d characters kept)", len(name))
				}
			})
			if t.Failed() {
				return
			}

			e := newTestEnv(t)
			e.writeClimatiqConfig("cq", nil)
			assertBounded(t, "the role write", func() {
				resp := e.do(logical.CreateOperation, "roles/ci", map[string]any{"config": "cq", "project_id": e.projectID, "key_name_template": tc.template})
				if !resp.IsError() {
					t.Fatal("the role write accepted the template")
				}
				if msg := resp.Error().Error(); !strings.Contains(msg, "key_name_template") || !strings.Contains(msg, tc.fix) {
					t.Fatalf("the role write's error %q does not name key_name_template and %q", msg, tc.fix)
				}
			})

			// A role stored before the bound (or by an older version) must
			// not take the plugin down at issuance either.
			if err := putEntry(context.Background(), e.storage, roleStoragePrefix+"ci",
				&roleEntry{Config: "cq", ProjectID: e.projectID, KeyNameTemplate: tc.template}); err != nil {
				t.Fatal(err)
			}
			// Issuance's shorter names may fit the bounds; either way it
			// stays within them.
			assertBounded(t, "issuance", func() {
				resp := e.do(logical.ReadOperation, "creds/ci", nil)
				if resp.IsError() && !strings.Contains(resp.Error().Error(), "key_name_template") {
					t.Fatalf("issuance's error %q does not name key_name_template", resp.Error())
				}
			})
		})
	}
}

// assertBounded fails the test when f takes more than a second or
// allocates more than 32 MB.
func assertBounded(t *testing.T, what string, f func()) {
	t.Helper()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	f()
	took := time.Since(start)
	runtime.ReadMemStats(&after)
	if allocated := after.TotalAlloc - before.TotalAlloc; allocated > 32<<20 {
		t.Errorf("%s allocated %d MB", what, allocated>>20)
	}
	if took > time.Second {
		t.Errorf("%s took %s", what, took)
	}
}

// TestKeyNameTemplateFunctionsMatchSDK: the functions rendered here stand in
// for the sdk helper/template's, so existing templates keep their names.
func TestKeyNameTemplateFunctionsMatchSDK(t *testing.T) {
	data := keyNameData{RoleName: "Ci-Role", DisplayName: "oidc-Alice@example.com"}
	for _, tmpl := range []string{
		defaultKeyNameTemplate,
		`{{ .DisplayName | truncate 7 }}`,
		`{{ .DisplayName | truncate_sha256 12 }}|{{ .RoleName | truncate_sha256 12 }}`,
		`{{ .RoleName | uppercase }}{{ .RoleName | lowercase }}`,
		`{{ .DisplayName | replace "@" "-at-" }}`,
		`{{ .RoleName | sha256 }}`,
		`{{ .DisplayName | base64 }}`,
		`{{ printf "%s-%.3s" .RoleName .DisplayName }}{{ print .RoleName 1 2 }}{{ html "<a&b>" }}{{ js "'x'" }}{{ urlquery "a b" }}`,
		`{{ if eq .RoleName "Ci-Role" }}{{ len .DisplayName }}{{ else }}no{{ end }}{{ with $r := .RoleName }}{{ slice $r 0 2 }}{{ end }}`,
	} {
		t.Run(tmpl, func(t *testing.T) {
			sdk, err := template.NewTemplate(template.Template(tmpl))
			if err != nil {
				t.Fatal(err)
			}
			want, err := sdk.Generate(data)
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := parseKeyNameTemplate(tmpl)
			if err != nil {
				t.Fatal(err)
			}
			got, err := executeKeyNameTemplate(parsed, data)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("rendered %q, the sdk %q", got, want)
			}
		})
	}
}

func TestKeyNameTemplateIsBounded(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	for _, tmpl := range []string{
		`{{ random 50000000 }}`,
		`{{ range 1000000000 }}x{{ end }}`,
		`{{ .RoleName | replace "" "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" | replace "" "yyyyyyyyyyyyyyyyyyyyyyyyyyyy" }}`,
		`{{ define "x" }}{{ template "x" }}{{ end }}{{ template "x" }}`,
		`{{ .RoleName | base64 | base64 | base64 | base64 | base64 | base64 | base64 | base64 | base64 | base64 | base64 | base64 }}`,
	} {
		t.Run(tmpl, func(t *testing.T) {
			start := time.Now()
			e.mustFail(logical.CreateOperation, "roles/ci", map[string]any{"config": "cq", "project_id": e.projectID, "key_name_template": tmpl}, "key_name_template")
			if took := time.Since(start); took > 2*time.Second {
				t.Fatalf("refusing the template took %s", took)
			}
		})
	}
	// Bounded uses of the same functions still work.
	e.writeRole("ok", map[string]any{"config": "cq", "project_id": e.projectID,
		"key_name_template": `{{ .RoleName | replace "-" "_" }}-{{ random 8 }}-{{ if .DisplayName }}{{ .DisplayName | base64 | truncate 8 }}{{ end }}`})
	resp := e.mustOK(logical.ReadOperation, "creds/ok", nil)
	if name := resp.Data["key_name"].(string); !strings.Contains(name, "-ok-") {
		t.Fatalf("key name %q lacks the rendered role", name)
	}
}
