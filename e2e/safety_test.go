package e2e

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// TestSafetyThroughTheCLI checks, through the real vault CLI, what an
// operator sees for mistakes that once answered 500 or were accepted.
func TestSafetyThroughTheCLI(t *testing.T) {
	writeClimatiqConfig(t, "safe-cq")
	cli(t, "write", mount+"/roles/safe", "config=safe-cq", "project_id="+projectID)
	leased := cliJSON(t, "read", "-format=json", mount+"/creds/safe")
	leasedKey := leased.Data["key_id"].(string)
	defer cli(t, "lease", "revoke", "-sync", leased.LeaseID)

	tests := []struct {
		name  string
		args  []string
		field string
	}{
		{"config name with ..", []string{"write", mount + "/config/a..b", "provider=climatiq", "management_key=k", "verify_connection=false"}, "name"},
		{"role name with ..", []string{"write", mount + "/roles/a..b", "config=safe-cq", "project_id=" + projectID}, "name"},
		{"static role adopting a leased key", []string{"write", mount + "/static-roles/adopter", "config=safe-cq", "project_id=" + projectID,
			"rotation_period=1h", "key_id=" + leasedKey}, "key_id"},
		{"static role in an unknown project", []string{"write", mount + "/static-roles/nowhere", "config=safe-cq", "project_id=prj_nope", "rotation_period=1h"}, "project_id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := vault.Vault(tc.args...)
			if err == nil {
				t.Fatalf("accepted: %s", out)
			}
			msg := err.Error()
			if !strings.Contains(msg, "Code: 400") || !strings.Contains(msg, tc.field) {
				t.Fatalf("want a 400 naming %q, got: %s", tc.field, msg)
			}
		})
	}
	if _, ok := climatiqFake.Key(leasedKey); !ok {
		t.Fatal("the leased key is gone upstream")
	}
}

// TestUpstreamFailureStatus checks the status Vault's HTTP API gives a
// client when the upstream fails: 502 when it refuses or breaks, 504 when it
// does not answer in time, never a plain 500.
func TestUpstreamFailureStatus(t *testing.T) {
	writeClimatiqConfig(t, "status-cq", "max_retries=0", "request_timeout=1s")
	cli(t, "write", mount+"/roles/status", "config=status-cq", "project_id="+projectID)
	tests := []struct {
		name   string
		inject func()
		want   int
	}{
		{"upstream 401", func() { climatiqFake.FailNext(1, http.StatusUnauthorized) }, http.StatusBadGateway},
		{"upstream 403", func() { climatiqFake.FailNext(1, http.StatusForbidden) }, http.StatusBadGateway},
		{"upstream 503", func() { climatiqFake.FailNext(1, http.StatusServiceUnavailable) }, http.StatusBadGateway},
		{"upstream too slow", func() { climatiqFake.SetLatency(2 * time.Second) }, http.StatusGatewayTimeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.inject()
			defer climatiqFake.SetLatency(0)
			_, err := vault.Client.Logical().Read(mount + "/creds/status")
			var re *api.ResponseError
			if !errors.As(err, &re) || re.StatusCode != tc.want {
				t.Fatalf("want HTTP %d, got %v", tc.want, err)
			}
		})
	}
	// Let abandoned slow creates land, then leave nothing behind.
	time.Sleep(2 * time.Second)
	cli(t, "write", mount+"/tidy", "min_age=0s")
}
