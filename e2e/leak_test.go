package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"
)

// TestNoSecretInLogs runs the whole flow on a Vault server at trace log
// level with a file audit device, then searches the server log (which
// carries the plugin's log) and the audit log for every secret involved:
// the management key, the client secret, every issued key and token. Vault
// HMACs secrets in the audit log by default; the test keeps it so.
func TestNoSecretInLogs(t *testing.T) {
	s := startVault(t, "leak", "trace")
	auditLog := filepath.Join(filepath.Dir(s.LogPath), "audit.log")
	run := func(args ...string) string {
		t.Helper()
		out, err := s.Vault(args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	read := func(args ...string) *api.Secret {
		t.Helper()
		out := run(args...)
		secret := new(api.Secret)
		if err := json.Unmarshal([]byte(out), secret); err != nil {
			t.Fatalf("decoding: %v", err)
		}
		return secret
	}
	secrets := []string{managementKey, atqClientSecret}
	keep := func(v any) {
		if str, ok := v.(string); ok && str != "" {
			secrets = append(secrets, str)
		}
	}

	run("audit", "enable", "file", "file_path="+auditLog)
	run("write", mount+"/config/cq", "provider=climatiq", "management_key="+managementKey,
		"management_url="+climatiqFake.ManagementURL(), "api_url="+climatiqFake.APIURL())
	run("write", mount+"/config/aq", "provider=altruistiq", "client_id="+atqClientID, "client_secret="+atqClientSecret,
		"token_url="+altruistiqFake.TokenURL(), "api_url="+altruistiqFake.APIURL())
	if _, err := s.Vault("write", mount+"/config/wrong", "provider=climatiq", "management_key="+wrongManagement,
		"management_url="+climatiqFake.ManagementURL(), "api_url="+climatiqFake.APIURL()); err == nil {
		t.Fatal("a wrong management key was accepted")
	}
	secrets = append(secrets, wrongManagement)
	run("write", mount+"/roles/ci", "config=cq", "project_id="+projectID, "ttl=1h", "max_ttl=2h")
	run("write", mount+"/roles/isolated", "config=cq", "project_per_lease=true")
	run("write", mount+"/roles/export", "config=aq")

	var leases []string
	for _, role := range []string{"ci", "ci", "isolated"} {
		c := read("read", "-format=json", mount+"/creds/"+role)
		keep(c.Data["api_key"])
		leases = append(leases, c.LeaseID)
	}
	token := read("read", "-format=json", mount+"/creds/export")
	keep(token.Data["access_token"])
	run("lease", "renew", leases[0])
	run("list", mount+"/keys")

	run("write", mount+"/static-roles/app", "config=cq", "project_id="+projectID, "rotation_period=1h", "overlap_period=1m")
	keep(read("read", "-format=json", mount+"/static-creds/app").Data["api_key"])
	run("write", "-f", mount+"/rotate-role/app")
	keep(read("read", "-format=json", mount+"/static-creds/app").Data["api_key"])
	run("read", mount+"/static-roles/app")
	run("write", mount+"/tidy", "dry_run=true")

	for _, lease := range leases {
		run("lease", "revoke", "-sync", lease)
	}
	run("lease", "revoke", "-sync", token.LeaseID)
	run("delete", mount+"/static-roles/app")
	s.Stop() // flush everything to the logs

	if len(secrets) < 9 {
		t.Fatalf("collected only %d secrets; the flow did not run", len(secrets))
	}
	files := map[string]string{"vault server and plugin log": s.LogPath, "audit log": auditLog}
	leaks := 0
	for what, path := range files {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) == 0 {
			t.Fatalf("%s is empty", what)
		}
		if what == "vault server and plugin log" && !strings.Contains(string(data), "issued key") && !strings.Contains(string(data), "key-issue") {
			t.Fatalf("the plugin's log lines are missing from %s", path)
		}
		for _, secret := range secrets {
			if strings.Contains(string(data), secret) {
				leaks++
				t.Errorf("%s carries a secret (%d characters, starting %q)", what, len(secret), secret[:4])
			}
		}
	}
	fmt.Printf("LEAK-TEST secrets=%d files=%d leaks=%d\n", len(secrets), len(files), leaks)
}
