package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiqtest"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/internal/devvault"
)

// TestRestoreFromARaftSnapshot: on a real integrated-storage Vault, a
// snapshot is taken, then a static role is rotated (its old key deleted at
// once), keys are issued and revoked, and the snapshot is restored. The
// restored static role pointed at the deleted key: the restart after the
// restore rotates it, so static-creds serves a live key. The keys made
// after the snapshot are orphans one tidy removes; the leases restored from
// the snapshot revoke cleanly, including one whose key was deleted after
// it; and nothing of the mount is left upstream but the static role's key.
func TestRestoreFromARaftSnapshot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), vaultStartBudget)
	defer cancel()
	s, err := devvault.Start(ctx, devvault.Options{VaultBin: vaultBin, Dir: serverDir(t, "restore"), PluginDir: pluginDir,
		Raft: &devvault.RaftOptions{NodeID: "restore-1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.KillAll)
	if err := s.RegisterAndEnable(pluginSHA, pluginVersion, mount); err != nil {
		t.Fatal(err)
	}
	fake := climatiqtest.NewServer(managementKey)
	defer fake.Close()
	project := fake.AddProject("restore").ID
	run := func(args ...string) string {
		t.Helper()
		out, err := s.Vault(args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	field := func(args ...string) string {
		t.Helper()
		return strings.TrimSpace(run(append([]string{args[0], "-field=" + args[len(args)-1]}, args[1:len(args)-1]...)...))
	}
	run("write", mount+"/config/cq", "provider=climatiq", "management_key="+managementKey,
		"management_url="+fake.ManagementURL(), "api_url="+fake.APIURL())
	run("write", mount+"/roles/ci", "config=cq", "project_id="+project, "ttl=1h")
	run("write", mount+"/static-roles/app", "config=cq", "project_id="+project, "rotation_period=24h")
	restoredStatic := field("read", mount+"/static-creds/app", "key_id")
	keptLease := field("read", mount+"/creds/ci", "lease_id")
	revokedLater := field("read", mount+"/creds/ci", "lease_id")

	snapshot := filepath.Join(t.TempDir(), "carbon.snap")
	run("operator", "raft", "snapshot", "save", snapshot)

	// After the snapshot: a rotation that deletes the key the snapshot
	// holds, an issuance, and a revocation.
	run("write", mount+"/rotate-role/app", "delete_previous_keys=true")
	if _, ok := fake.Key(restoredStatic); ok {
		t.Fatal("the rotation kept the replaced key")
	}
	afterSnapshot := field("read", mount+"/creds/ci", "key_id")
	run("lease", "revoke", "-sync", revokedLater)

	run("operator", "raft", "snapshot", "restore", snapshot)
	var served string
	eventually(t, 60*time.Second, "static-creds serves a live key after the restore", func() bool {
		out, err := s.Vault("read", "-field=key_id", mount+"/static-creds/app")
		if err != nil {
			return false
		}
		served = strings.TrimSpace(out)
		_, live := fake.Key(served)
		return live
	})
	if served == restoredStatic {
		t.Fatalf("static-creds serves the key the snapshot held, %s, which is gone upstream", served)
	}

	// The key issued after the snapshot is covered by the issuance block
	// the snapshot holds (rolled back: the reload means no issuance of it is
	// in flight) or found by the marker scan; the rotated-to key only by the
	// scan. Either way, one tidy.
	tidy := tidyDataOn(t, s, "write", mount+"/tidy", "min_age=0s")
	if _, ok := fake.Key(afterSnapshot); ok {
		t.Fatalf("the key issued after the snapshot, %s, survived tidy: %v", afterSnapshot, tidy)
	}
	if len(anyStrings(tidy["orphans"])) == 0 {
		t.Fatalf("tidy found no orphan after the restore, want the key rotated to after the snapshot: %v", tidy)
	}
	run("lease", "revoke", "-sync", "-prefix", mount+"/creds/ci")
	if _, err := s.Vault("lease", "lookup", keptLease); err == nil {
		t.Fatal("a lease restored from the snapshot survived revoke -prefix")
	}
	var left []string
	for _, k := range fake.Keys() {
		if k.ID != served {
			left = append(left, k.ID+" "+k.Name)
		}
	}
	if len(left) > 0 {
		t.Fatalf("after tidy and revoking every lease, upstream still holds %v besides the static key %s", left, served)
	}
}

func anyStrings(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, x := range list {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}
