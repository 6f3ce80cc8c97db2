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
			if got := errorMessage([]byte(tc.body), upstream.NewRedactor("s3cr3t")); got != tc.want {
				t.Fatalf("errorMessage = %q, want %q", got, tc.want)
			}
		})
	}
}
