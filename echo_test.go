package carbon

import (
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/internal/leakcheck"
)

// TestEchoingUpstreams: upstreams that echo the request in their error
// answers (the fakes' SetEchoRequest) make a connection write fail with a
// 400 and an issuance with a 502, and neither answer carries any form of
// the credentials sent: literal, escaped, JSON-escaped or base64, of the
// secret alone or of the Basic id:secret pair.
func TestEchoingUpstreams(t *testing.T) {
	const wrongSecret = `wrong s3cr3t/+&"<é>=%`
	tests := []struct {
		name string
		// write is the connection; fail sets up the refusal of the creds
		// read that follows it (verify_connection passed).
		write   func(e *testEnv, secret string) map[string]any
		secrets func(e *testEnv, secret string) []leakcheck.Form
		fail    func(e *testEnv)
	}{
		{
			name: "altruistiq, auth_style=params",
			write: func(e *testEnv, secret string) map[string]any {
				return map[string]any{"provider": "altruistiq", "client_id": testClientID, "client_secret": secret,
					"token_url": e.altruistiq.TokenURL(), "api_url": e.altruistiq.APIURL(), "auth_style": "params"}
			},
			secrets: altruistiqForms,
			fail:    func(e *testEnv) { e.altruistiq.FailNext(1, http.StatusUnauthorized) },
		},
		{
			name: "altruistiq, auth_style=header",
			write: func(e *testEnv, secret string) map[string]any {
				return map[string]any{"provider": "altruistiq", "client_id": testClientID, "client_secret": secret,
					"token_url": e.altruistiq.PACTTokenURL(), "api_url": e.altruistiq.APIURL(), "auth_style": "header"}
			},
			secrets: altruistiqForms,
			fail:    func(e *testEnv) { e.altruistiq.FailNext(1, http.StatusUnauthorized) },
		},
		{
			name: "climatiq",
			write: func(e *testEnv, secret string) map[string]any {
				return map[string]any{"provider": "climatiq", "management_key": secret,
					"management_url": e.climatiq.ManagementURL(), "api_url": e.climatiq.APIURL(), "max_retries": 0}
			},
			secrets: func(_ *testEnv, secret string) []leakcheck.Form { return leakcheck.Encodings(secret) },
			fail:    func(e *testEnv) { e.climatiq.FailNext(1, http.StatusForbidden) },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.altruistiq.SetEchoRequest(true)
			e.climatiq.SetEchoRequest(true)
			check := func(what string, status, want int, text string, forms []leakcheck.Form) {
				t.Helper()
				if status != want {
					t.Fatalf("%s: status %d, want %d: %s", what, status, want, text)
				}
				if found := leakcheck.Find(text, forms); len(found) > 0 {
					t.Fatalf("%s carries the credentials (%s): %s", what, strings.Join(found, ", "), text)
				}
			}

			// A wrong secret, echoed by the verification.
			resp, err := e.doErr(logical.CreateOperation, "config/echo", tc.write(e, wrongSecret))
			check("the refused write", statusOf(resp, err), http.StatusBadRequest, errorText(resp, err), tc.secrets(e, wrongSecret))

			// The right secret, echoed when issuance is refused.
			secret := testClientSecret
			if tc.name == "climatiq" {
				secret = testManagementKey
			}
			e.mustOK(logical.CreateOperation, "config/echo", tc.write(e, secret))
			role := map[string]any{"config": "echo"}
			if tc.name == "climatiq" {
				role["project_id"] = e.projectID
			}
			e.writeRole("echo", role)
			tc.fail(e)
			resp, err = e.doErr(logical.ReadOperation, "creds/echo", nil)
			check("the refused issuance", codedStatus(resp, err), http.StatusBadGateway, errorText(resp, err), tc.secrets(e, secret))
		})
	}
}

func altruistiqForms(_ *testEnv, secret string) []leakcheck.Form {
	return append(leakcheck.Encodings(secret), leakcheck.BasicEncodings(testClientID, secret)...)
}
