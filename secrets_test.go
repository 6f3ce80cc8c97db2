package carbon

import (
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestClimatiqRevokeFailureIsRetried(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", map[string]any{"max_retries": 0})
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	resp := e.mustOK(logical.ReadOperation, "creds/ci", nil)
	keyID := resp.Data["key_id"].(string)

	e.climatiq.FailNext(1, http.StatusInternalServerError)
	if _, err := e.revoke(resp.Secret); err == nil {
		t.Fatal("revoke reported success although the upstream delete failed")
	}
	assertInventory(t, e, "ci", resp.Data["key_name"].(string), true)
	if _, err := e.revoke(resp.Secret); err != nil {
		t.Fatalf("retried revoke: %v", err)
	}
	if _, ok := e.climatiq.Key(keyID); ok {
		t.Fatal("key still exists upstream")
	}
}

// A revocation keeps retrying a delete that failed in a way that may pass
// (5xx, 429) beyond the client's max_retries, within revokeRetryFor, and
// gives up at once on one that will not (a 401).
func TestRevocationRetriesFailuresThatMayPass(t *testing.T) {
	defer func(d time.Duration) { revokeRetryFor = d }(revokeRetryFor)
	revokeRetryFor = 10 * time.Second
	for _, tc := range []struct {
		name     string
		failures int
		status   int
		revoked  bool
	}{
		{"503s past max_retries", 4, http.StatusServiceUnavailable, true},
		{"500s past max_retries", 3, http.StatusInternalServerError, true},
		{"401 is final", 1, http.StatusUnauthorized, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.writeClimatiqConfig("cq", map[string]any{"max_retries": 0})
			e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
			resp := e.mustOK(logical.ReadOperation, "creds/ci", nil)
			keyID := resp.Data["key_id"].(string)

			e.climatiq.FailNextMethod(http.MethodDelete, tc.failures, tc.status)
			began := time.Now()
			_, err := e.revoke(resp.Secret)
			if (err == nil) != tc.revoked {
				t.Fatalf("revoke after %d× %d: err=%v, want revoked=%v", tc.failures, tc.status, err, tc.revoked)
			}
			if _, upstream := e.climatiq.Key(keyID); upstream == tc.revoked {
				t.Fatalf("key upstream=%v after the revocation (revoked=%v)", upstream, tc.revoked)
			}
			if !tc.revoked && time.Since(began) > time.Second {
				t.Fatalf("a final failure was retried for %s", time.Since(began))
			}
		})
	}
}
