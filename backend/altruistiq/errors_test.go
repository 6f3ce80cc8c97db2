package altruistiq

import (
	"strings"
	"testing"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/internal/upstream"
)

func TestErrorMessage(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string
	}{
		{"message", `{"message":"Token expired"}`, "Token expired"},
		{"status", `{"status":"Unauthorized"}`, "Unauthorized"},
		{"message before status", `{"status":"Unauthorized","message":"Token expired"}`, "Token expired"},
		{"status before error_description", `{"status":"Bad Request","error_description":"Scope not allowed"}`, "Bad Request"},
		{"message before error_description", `{"message":"Nope","error_description":"Scope not allowed"}`, "Nope"},
		{"RFC 6749 description with its code", `{"error":"invalid_scope","error_description":"Scope not allowed"}`, "Scope not allowed (invalid_scope)"},
		{"message with an RFC 6749 code", `{"error":"invalid_client","message":"Unknown client"}`, "Unknown client (invalid_client)"},
		{"code alone", `{"error":"invalid_client"}`, "invalid_client"},
		{"code equal to the message once", `{"error":"Unauthorized","status":"Unauthorized"}`, "Unauthorized"},
		{"fields of another type are skipped", `{"message":{"text":"x"},"status":"Forbidden"}`, "Forbidden"},
		{"empty message falls through", `{"message":"","status":"Forbidden"}`, "Forbidden"},
		{"not JSON", `<html>Unauthorized</html>`, ""},
		{"JSON but not an object", `["Unauthorized"]`, ""},
		{"secret redacted", `{"message":"bad secret s3cr3t"}`, "bad secret [redacted]"},
		{"long message bounded", `{"message":"` + strings.Repeat("é", 500) + `"}`, strings.Repeat("é", upstream.MaxMessageLength-3) + "..."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := errorMessage([]byte(tc.body), upstream.NewRedactor("s3cr3t").Clean); got != tc.want {
				t.Fatalf("errorMessage = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestErrorMessageBrief: what the token endpoint says passes only as a
// brief message, withheld whole when it echoes the credentials.
func TestErrorMessageBrief(t *testing.T) {
	redact := upstream.NewRedactor("s3cr3t").WithBasicAuth("cid", "s3cr3t")
	tests := []struct {
		name string
		body string
		want string
	}{
		{"status", `{"status":"Unauthorized"}`, "Unauthorized"},
		{"RFC 6749 description with its code", `{"error":"invalid_client","error_description":"Unknown client"}`, "Unknown client (invalid_client)"},
		{"echoed Basic header withheld, code kept", `{"error":"invalid_client","message":"got Authorization: Basic Y2lkOnMzY3IzdA=="}`, upstream.Withheld + " (invalid_client)"},
		{"echoed form body withheld", `{"status":"grant_type=client_credentials&client_id=cid&client_secret=s3cr3t"}`, upstream.Withheld},
		{"echo in the code withheld", `{"error":"bad s3cr3t"}`, upstream.Withheld},
		{"long message cut short", `{"message":"` + strings.Repeat("x", 500) + `"}`, strings.Repeat("x", upstream.MaxBriefLength-3) + "..."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := errorMessage([]byte(tc.body), redact.Brief); got != tc.want {
				t.Fatalf("errorMessage = %q, want %q", got, tc.want)
			}
		})
	}
}
