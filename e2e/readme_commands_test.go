package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/internal/devvault"
)

// The README's commands, run as it gives them with the real CLI.

// readmeBlock is the fenced block of the README that follows heading.
func readmeBlock(t *testing.T, heading string) string {
	t.Helper()
	root, err := devvault.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(readme), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("README has no heading %q", heading)
	}
	_, block, _ := strings.Cut(after, "```")
	_, block, _ = strings.Cut(block, "\n") // the fence's language tag
	block, _, _ = strings.Cut(block, "```")
	return block
}

// TestReadmeKeysPaging: the paging commands of the README's keys/ section
// return a first page of the asked size, with key_info, and a next page
// after its last key that repeats none of it.
func TestReadmeKeysPaging(t *testing.T) {
	writeClimatiqConfig(t, "cq-page")
	cli(t, "write", mount+"/roles/page", "config=cq-page", "project_id="+projectID, "ttl=1h")
	for range 3 {
		lease := cliJSON(t, "read", "-format=json", mount+"/creds/page").LeaseID
		defer cli(t, "lease", "revoke", "-sync", lease)
	}
	page := func(args ...string) ([]string, map[string]any) {
		s := cliJSON(t, append([]string{"read", "-format=json", mount + "/keys", "list=true"}, args...)...)
		if s == nil || s.Data == nil {
			t.Fatalf("vault read %s/keys list=true %v: no data", mount, args)
		}
		var keys []string
		for _, k := range s.Data["keys"].([]any) {
			keys = append(keys, k.(string))
		}
		info, _ := s.Data["key_info"].(map[string]any)
		return keys, info
	}
	first, info := page("limit=2")
	if len(first) != 2 || len(info) != 2 {
		t.Fatalf("first page: %d keys, %d key_info entries; want 2 and 2", len(first), len(info))
	}
	next, _ := page("limit=2", "after="+first[1])
	if len(next) == 0 {
		t.Fatal("the next page after the first is empty with 3 keys issued")
	}
	for _, k := range next {
		if k == first[0] || k == first[1] {
			t.Fatalf("the next page repeats %s of the first", k)
		}
	}
}

// TestReadmePolicyLetsApplicationsRenew: a token holding only the README's
// example policy (no default policy) issues from creds/ci and renews the
// lease, as the policy's comment says.
func TestReadmePolicyLetsApplicationsRenew(t *testing.T) {
	writeClimatiqConfig(t, "cq-policy")
	cli(t, "write", mount+"/roles/ci", "config=cq-policy", "project_id="+projectID, "ttl=1h")
	defer cli(t, "delete", mount+"/roles/ci")
	policy := filepath.Join(t.TempDir(), "readme.hcl")
	if err := os.WriteFile(policy, []byte(readmeBlock(t, "## Example policy")), 0o600); err != nil {
		t.Fatal(err)
	}
	cli(t, "policy", "write", "readme-example", policy)
	var created struct {
		Auth struct {
			ClientToken string `json:"client_token"`
		} `json:"auth"`
	}
	out := cli(t, "token", "create", "-format=json", "-policy=readme-example", "-no-default-policy", "-ttl=10m")
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.Auth.ClientToken == "" {
		t.Fatalf("token create: %v\n%s", err, out)
	}
	asApp := func(args ...string) (string, error) {
		cmd := exec.Command(vault.Binary(), args...)
		cmd.Env = append(vault.Env(), "VAULT_TOKEN="+created.Auth.ClientToken)
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	out, err := asApp("read", "-format=json", mount+"/creds/ci")
	if err != nil {
		t.Fatalf("the README policy cannot issue from creds/ci: %v\n%s", err, out)
	}
	var lease struct {
		LeaseID string `json:"lease_id"`
	}
	if err := json.Unmarshal([]byte(out), &lease); err != nil || lease.LeaseID == "" {
		t.Fatalf("creds/ci answer: %v\n%s", err, out)
	}
	defer cli(t, "lease", "revoke", "-sync", lease.LeaseID)
	if out, err := asApp("lease", "renew", lease.LeaseID); err != nil {
		t.Fatalf("the README policy cannot renew its lease: %v\n%s", err, out)
	}
}

// TestReadmeMountRemovalLeavesNoKeyUpstream follows "Removing the mount" on
// a mount of its own: a static role in overlap (a current and a replaced
// key) and a dynamic lease; after the README's commands no key of the
// mount is left upstream.
func TestReadmeMountRemovalLeavesNoKeyUpstream(t *testing.T) {
	const rm = "carbon-rm"
	cli(t, "secrets", "enable", "-path="+rm, "-plugin-version="+pluginVersion, devvault.PluginName)
	cli(t, "write", rm+"/config/cq", "provider=climatiq", "management_key="+managementKey,
		"management_url="+climatiqFake.ManagementURL(), "api_url="+climatiqFake.APIURL())
	cli(t, "write", rm+"/static-roles/app", "config=cq", "project_id="+projectID, "rotation_period=24h", "overlap_period=1h")
	cli(t, "write", "-f", rm+"/rotate-role/app")
	cli(t, "write", rm+"/roles/dyn", "config=cq", "project_id="+projectID, "ttl=1h")
	cliJSON(t, "read", "-format=json", rm+"/creds/dyn")

	list := func(path string) []string {
		var names []string
		if err := json.Unmarshal([]byte(cli(t, "list", "-format=json", path)), &names); err != nil {
			t.Fatalf("vault list %s: %v", path, err)
		}
		return names
	}
	owned := list(rm + "/keys")
	if len(owned) != 3 {
		t.Fatalf("the mount owns %d keys, want 3 (static current, static replaced, dynamic)", len(owned))
	}

	// The README's loop, without jq.
	for _, r := range list(rm + "/static-roles") {
		cli(t, "write", rm+"/static-roles/"+r, "delete_key_on_remove=true")
		cli(t, "delete", rm+"/static-roles/"+r)
	}
	if n := len(list(rm + "/keys")); n != 1 {
		t.Fatalf("after deleting the static roles the mount lists %d keys, want the dynamic one", n)
	}
	cli(t, "secrets", "disable", rm+"/")
	for _, id := range owned {
		if _, ok := climatiqFake.Key(id); ok {
			t.Errorf("key %s is still upstream after the README's removal", id)
		}
	}
}
