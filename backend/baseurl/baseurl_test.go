package baseurl

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		raw, want, err string
	}{
		{"https://api.example.com/management/v1/", "https://api.example.com/management/v1", ""},
		{"http://127.0.0.1:8200/m", "http://127.0.0.1:8200/m", ""},
		{"http://localhost/m", "http://localhost/m", ""},
		{"https://api.example.com:443/v1", "https://api.example.com:443/v1", ""},
		{"https://api.example.com/a..b/v1", "https://api.example.com/a..b/v1", ""},
		{"/just/a/path", "", "not an absolute URL"},
		{"https://u:p@api.example.com", "", "must not carry credentials"},
		{"https://api.example.com/?q=1", "", "must not have a query"},
		{"http://example.com/m", "", "http:// is allowed only for loopback"},
		{"ftp://127.0.0.1/", "", "scheme \"ftp\" is not supported"},
		{"https://api.example.com:70000/v1", "", "port \"70000\" is out of range"},
		{"https://api.example.com:0/v1", "", "port \"0\" is out of range"},
		{"https://api.example.com/management/../v1", "", `has a ".." path segment`},
		{"https://api.example.com/management/%2e%2e/v1", "", `has a "%2e%2e" path segment`},
		{"https://api.example.com/management/%2E%2e", "", `has a "%2E%2e" path segment`},
		{"https://api.example.com/./v1", "", `has a "." path segment`},
	} {
		t.Run(tc.raw, func(t *testing.T) {
			got, err := Check(tc.raw)
			switch {
			case tc.err == "" && (err != nil || got != tc.want):
				t.Fatalf("Check(%q) = %q, %v; want %q", tc.raw, got, err, tc.want)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("Check(%q) = %q, %v; want an error saying %q", tc.raw, got, err, tc.err)
			}
		})
	}
}
