package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiqtest"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/internal/devvault"
)

// upgradedVersion is the working tree's version in the upgrade test: above
// the previous release, as a real upgrade is.
const upgradedVersion = "v0.2.0-e2e"

// previousRelease reads a release file of e2e/testdata (previous-release:
// the release before this one; first-release: v0.1): the commit of the
// release and the version it is registered as.
func previousRelease(t *testing.T, file string) (commit, version string) {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if fields := strings.Fields(line); len(fields) == 2 && len(fields[0]) == 40 {
			return fields[0], fields[1]
		}
		t.Fatalf("testdata/%s: want `<40-hex commit> <version>`, got %q", file, line)
	}
	t.Fatalf("testdata/%s names no commit", file)
	return "", ""
}

// buildPreviousRelease builds the plugin as it was at commit, from this
// clone's history, into dir under its own command name.
func buildPreviousRelease(t *testing.T, root, commit, version, dir string) (command, sha string) {
	t.Helper()
	if out, err := exec.Command("git", "-C", root, "cat-file", "-e", commit+"^{commit}").CombinedOutput(); err != nil {
		t.Fatalf("the previous release %s is not in this clone (%v %s): the upgrade test builds it from history; "+
			"run it in a full clone (git fetch --unshallow)", commit, err, out)
	}
	src := t.TempDir()
	tarball, err := exec.Command("git", "-C", root, "archive", commit).Output()
	if err != nil {
		t.Fatalf("git archive %s: %v", commit, err)
	}
	untar := exec.Command("tar", "-x", "-C", src)
	untar.Stdin = bytes.NewReader(tarball)
	if out, err := untar.CombinedOutput(); err != nil {
		t.Fatalf("unpacking %s: %v %s", commit, err, out)
	}
	command = "vault-plugin-carbon-" + version
	if _, sha, err = devvault.BuildPluginAs(src, dir, command, version); err != nil {
		t.Fatalf("building the previous release %s: %v", commit, err)
	}
	return command, sha
}

// upgradeRig is a Vault with two versions of the plugin registered, the
// previous release (built from this clone's history) and the working tree,
// and the mount enabled on the previous one.
type upgradeRig struct {
	t                      *testing.T
	s                      *devvault.Server
	oldVersion, newVersion string
}

func newUpgradeRig(t *testing.T, releaseFile, newVersion string) *upgradeRig {
	t.Helper()
	root, err := devvault.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	commit, oldVersion := previousRelease(t, releaseFile)
	plugins := serverDir(t, releaseFile+"-plugins")
	if err := os.MkdirAll(plugins, 0o755); err != nil {
		t.Fatal(err)
	}
	oldCommand, oldSHA := buildPreviousRelease(t, root, commit, oldVersion, plugins)
	_, newSHA, err := devvault.BuildPluginAs(root, plugins, "vault-plugin-carbon", newVersion)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), vaultStartBudget)
	defer cancel()
	s, err := devvault.Start(ctx, devvault.Options{
		VaultBin: vaultBin, Dir: serverDir(t, releaseFile), PluginDir: plugins, LogLevel: "debug",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.KillAll)
	r := &upgradeRig{t: t, s: s, oldVersion: oldVersion, newVersion: newVersion}
	r.run("plugin", "register", "-sha256="+oldSHA, "-version="+oldVersion, "-command="+oldCommand, "secret", devvault.PluginName)
	r.run("plugin", "register", "-sha256="+newSHA, "-version="+newVersion, "-command=vault-plugin-carbon", "secret", devvault.PluginName)
	r.run("secrets", "enable", "-path="+mount, "-plugin-version="+oldVersion, devvault.PluginName)
	return r
}

func (r *upgradeRig) run(args ...string) string {
	r.t.Helper()
	out, err := r.s.Vault(args...)
	if err != nil {
		r.t.Fatal(err)
	}
	return out
}

// runJSON runs a command with -format=json and returns its data, with the
// lease id under "lease_id".
func (r *upgradeRig) runJSON(args ...string) map[string]any {
	r.t.Helper()
	// -format goes after the subcommand: `read`, `write`, `lease renew`.
	n := 1
	if args[0] == "lease" {
		n = 2
	}
	secret := decodeSecret(r.t, r.run(append(append(append([]string{}, args[:n]...), "-format=json"), args[n:]...)...))
	if secret.Data == nil {
		return map[string]any{"lease_id": secret.LeaseID}
	}
	secret.Data["lease_id"] = secret.LeaseID
	return secret.Data
}

// switchTo moves the mount to a version the way an operator does.
func (r *upgradeRig) switchTo(version string) {
	r.t.Helper()
	start := time.Now()
	r.run("secrets", "tune", "-plugin-version="+version, mount+"/")
	r.run("write", "sys/plugins/reload/backend", "mounts="+mount+"/")
	eventually(r.t, 30*time.Second, "mount runs "+version, func() bool {
		m, err := r.s.Client.Logical().Read("sys/mounts/" + mount)
		return err == nil && m != nil && m.Data["running_plugin_version"] == version
	})
	r.t.Logf("switched %s/ to %s in %s", mount, version, time.Since(start).Round(time.Millisecond))
}

// staticKey reads static-creds/app.
func (r *upgradeRig) staticKey() (keyID, apiKey, previous string) {
	r.t.Helper()
	d := r.runJSON("read", mount+"/static-creds/app")
	previous, _ = d["previous_key_id"].(string)
	return d["key_id"].(string), d["api_key"].(string), previous
}

// TestUpgradeFromV01AndDowngradeInPlace registers the first release and the
// working tree as two versions of carbon, runs a mount on the old one with
// config, leases, a static role in overlap and a WAL entry of an interrupted
// issuance, switches it to the new version the way an operator does (tune
// -plugin-version, reload), and back again.
//
// What the downgrade does: the previous release has no storage format check;
// it serves the mount, because the new version keeps the storage readable by
// it (a static role's newest replaced key is also written in the v0.1 fields,
// inventory and WAL entries keep their v0.1 shape). Leases issued by the new
// version renew and revoke under the old one, and the overlap that began
// under the new version ends on time under the old one.
func TestUpgradeFromV01AndDowngradeInPlace(t *testing.T) {
	r := newUpgradeRig(t, "first-release", upgradedVersion)
	s, run, runJSON, switchTo, staticKey := r.s, r.run, r.runJSON, r.switchTo, r.staticKey
	oldVersion := r.oldVersion
	fake := climatiqtest.NewServer(managementKey)
	defer fake.Close()
	project := fake.AddProject("upgrade").ID
	// A second upstream that hangs, for the interrupted issuance.
	hang := climatiqtest.NewServer(managementKey)
	defer hang.Close()
	exists := func(f *climatiqtest.Server, keyID string) bool { _, ok := f.Key(keyID); return ok }

	// ---- on the previous release ----
	run("write", mount+"/config/cq", "provider=climatiq", "management_key="+managementKey,
		"management_url="+fake.ManagementURL(), "api_url="+fake.APIURL())
	run("write", mount+"/roles/ci", "config=cq", "project_id="+project, "ttl=1h", "max_ttl=2h")
	oldLease := runJSON("read", mount+"/creds/ci")
	oldLeaseKey := oldLease["key_id"].(string)

	strandedKey := interruptIssuance(t, r.s, hang, "cq-hang")

	const rotationPeriod, overlap = 20 * time.Second, 10 * time.Second
	run("write", mount+"/static-roles/app", "config=cq", "project_id="+project,
		"rotation_period="+rotationPeriod.String(), "overlap_period="+overlap.String())
	firstKey, _, _ := staticKey()
	run("write", "-f", mount+"/rotate-role/app")
	rotatedAt := time.Now()
	currentKey, currentValue, previous := staticKey()
	if previous != firstKey || currentKey == firstKey {
		t.Fatalf("no overlap running on the previous release: current %s previous %q (first %s)", currentKey, previous, firstKey)
	}

	// ---- upgrade ----
	switchTo(upgradedVersion)

	if id, value, prev := staticKey(); id != currentKey || value != currentValue || prev != firstKey {
		t.Fatalf("static role after the upgrade: key %s previous %q, want key %s (same value) previous %s", id, prev, currentKey, firstKey)
	}
	renewed := runJSON("lease", "renew", "-increment=1h", oldLease["lease_id"].(string))
	if renewed["lease_id"] != oldLease["lease_id"] {
		t.Fatalf("renewing the old lease answered %v", renewed)
	}
	run("lease", "revoke", "-sync", oldLease["lease_id"].(string))
	if exists(fake, oldLeaseKey) {
		t.Fatal("a lease of the previous release revoked under the new one left its key upstream")
	}
	overlapEnd := rotatedAt.Add(overlap)
	eventually(t, time.Until(overlapEnd)+8*time.Second, "the overlap begun on the previous release ends", func() bool {
		return !exists(fake, firstKey)
	})
	if early := time.Until(overlapEnd); early > time.Second {
		t.Fatalf("the replaced key was deleted %s before its overlap ended", early)
	}

	// The plugin reload started a new instance, so tidy rolls back the WAL
	// entry written before it at once.
	tidy := runJSON("write", mount+"/tidy", "min_age=0s")
	if n, _ := tidy["wal_rolled_back"].(json.Number).Int64(); n != 1 || exists(hang, strandedKey) {
		t.Fatalf("tidy after the upgrade: %v; stranded key still upstream: %v", tidy, exists(hang, strandedKey))
	}
	if orphans, _ := tidy["orphans"].([]any); len(orphans) != 0 {
		t.Fatalf("tidy after the upgrade found orphans: %v", tidy)
	}
	tidy = runJSON("write", mount+"/tidy", "min_age=0s", "dry_run=true")
	if n, _ := tidy["wal_rolled_back"].(json.Number).Int64(); n != 0 || len(tidy["orphans"].([]any)) != 0 {
		t.Fatalf("a second tidy found work: %v", tidy)
	}

	eventually(t, time.Until(rotatedAt.Add(rotationPeriod))+10*time.Second, "the static role rotates on schedule after the upgrade", func() bool {
		id, _, _ := staticKey()
		return id != currentKey
	})
	rotatedAt = time.Now()
	newKey, newValue, previous := staticKey()
	if previous != currentKey || !exists(fake, currentKey) {
		t.Fatalf("the rotation after the upgrade: previous %q, want %s kept for its overlap", previous, currentKey)
	}
	newLease := runJSON("read", mount+"/creds/ci")

	// ---- downgrade ----
	switchTo(oldVersion)

	if id, value, prev := staticKey(); id != newKey || value != newValue || prev != currentKey {
		t.Fatalf("static role after the downgrade: key %s previous %q, want key %s (same value) previous %s", id, prev, newKey, currentKey)
	}
	runJSON("lease", "renew", "-increment=1h", newLease["lease_id"].(string))
	run("lease", "revoke", "-sync", newLease["lease_id"].(string))
	if exists(fake, newLease["key_id"].(string)) {
		t.Fatal("a lease of the new version revoked under the previous release left its key upstream")
	}
	overlapEnd = rotatedAt.Add(overlap)
	eventually(t, time.Until(overlapEnd)+8*time.Second, "the overlap begun on the new version ends under the previous release", func() bool {
		return !exists(fake, currentKey)
	})
	if early := time.Until(overlapEnd); early > time.Second {
		t.Fatalf("the replaced key was deleted %s before its overlap ended", early)
	}
	// The previous release cannot read the moved inventory: its tidy must
	// refuse (the tombstone in the old layout fails its walk) rather than
	// take the moved keys for orphans.
	keysBefore := len(fake.Keys())
	out, err := s.Vault("write", "-format=json", mount+"/tidy", "min_age=0s")
	if err == nil || !strings.Contains(err.Error()+out, "moved-to-key-and-keylist") {
		t.Fatalf("tidy under the previous release did not refuse the moved inventory: %v %s", err, out)
	}
	if n := len(fake.Keys()); n != keysBefore {
		t.Fatalf("the refused tidy deleted %d keys", keysBefore-n)
	}
	run("delete", mount+"/static-roles/app")
	if left := fake.Keys(); len(left) != 0 {
		t.Fatalf("keys left upstream after the last lease and the static role are gone: %v", left)
	}
}

// formatUpgradeVersion is the working tree's version in the format 3 → 4
// upgrade test: above the previous release.
const formatUpgradeVersion = "v0.3.0-e2e"

// TestUpgradeFromFormat3AndBack runs a mount on the previous release
// (storage format 3) with a live lease, a static role in overlap, a
// released key and the WAL entry of an interrupted issuance, switches it to
// the working tree (format 4), back to the previous release, and up again.
//
// The previous release reads at most format 3: after the upgrade its format
// gate refuses every request (revocations included, which Vault keeps and
// retries) with a 503 naming the version to switch back to, and touches
// nothing upstream. Switching up again picks everything up.
func TestUpgradeFromFormat3AndBack(t *testing.T) {
	r := newUpgradeRig(t, "previous-release", formatUpgradeVersion)
	s, run, runJSON, switchTo := r.s, r.run, r.runJSON, r.switchTo
	oldVersion := r.oldVersion
	fake := climatiqtest.NewServer(managementKey)
	defer fake.Close()
	project := fake.AddProject("upgrade").ID
	hang := climatiqtest.NewServer(managementKey)
	defer hang.Close()
	staticKey := func() (keyID, previous string) {
		t.Helper()
		keyID, _, previous = r.staticKey()
		return keyID, previous
	}
	exists := func(f *climatiqtest.Server, keyID string) bool { _, ok := f.Key(keyID); return ok }

	// ---- on the previous release (format 3) ----
	run("write", mount+"/config/cq", "provider=climatiq", "management_key="+managementKey,
		"management_url="+fake.ManagementURL(), "api_url="+fake.APIURL())
	run("write", mount+"/roles/ci", "config=cq", "project_id="+project, "ttl=1h", "max_ttl=2h")
	oldLease := runJSON("read", mount+"/creds/ci")

	strandedKey := interruptIssuance(t, r.s, hang, "cq-hang")

	// A released key and a static role in overlap.
	run("write", mount+"/static-roles/rel", "config=cq", "project_id="+project, "rotation_period=1h", "delete_key_on_remove=false")
	releasedKey := runJSON("read", mount+"/static-creds/rel")["key_id"].(string)
	run("delete", mount+"/static-roles/rel")
	const rotationPeriod, overlap = 20 * time.Second, 10 * time.Second
	run("write", mount+"/static-roles/app", "config=cq", "project_id="+project,
		"rotation_period="+rotationPeriod.String(), "overlap_period="+overlap.String())
	firstKey, _ := staticKey()
	run("write", "-f", mount+"/rotate-role/app")
	rotatedAt := time.Now()
	currentKey, previous := staticKey()
	if previous != firstKey {
		t.Fatalf("no overlap running on the previous release: current %s previous %q (first %s)", currentKey, previous, firstKey)
	}

	// ---- upgrade to format 4 ----
	switchTo(formatUpgradeVersion)
	if id, prev := staticKey(); id != currentKey || prev != firstKey {
		t.Fatalf("static role after the upgrade: key %s previous %q, want %s previous %s", id, prev, currentKey, firstKey)
	}
	runJSON("lease", "renew", "-increment=1h", oldLease["lease_id"].(string))
	if ids := inventoryIDs(t, s.Client); len(ids) != 3 { // the lease's key and the static role's two
		t.Fatalf("keys/ after the upgrade = %v, want the lease's key and the static role's current and previous", ids)
	}
	run("lease", "revoke", "-sync", oldLease["lease_id"].(string))
	if exists(fake, oldLease["key_id"].(string)) {
		t.Fatal("a lease of the previous release revoked under the new one left its key upstream")
	}
	eventually(t, time.Until(rotatedAt.Add(overlap))+8*time.Second, "the overlap begun on the previous release ends", func() bool {
		return !exists(fake, firstKey)
	})
	tidy := runJSON("write", mount+"/tidy", "min_age=0s")
	if n, _ := tidy["wal_rolled_back"].(json.Number).Int64(); n != 1 || exists(hang, strandedKey) {
		t.Fatalf("tidy after the upgrade: %v; stranded key still upstream: %v", tidy, exists(hang, strandedKey))
	}
	if orphans, _ := tidy["orphans"].([]any); len(orphans) != 0 || !exists(fake, releasedKey) {
		t.Fatalf("tidy after the upgrade: %v; released key upstream: %v", tidy, exists(fake, releasedKey))
	}
	eventually(t, time.Until(rotatedAt.Add(rotationPeriod))+10*time.Second, "the static role rotates on schedule after the upgrade", func() bool {
		id, _ := staticKey()
		return id != currentKey
	})
	newKey, previous := staticKey()
	if previous != currentKey || !exists(fake, currentKey) {
		t.Fatalf("the rotation after the upgrade: previous %q, want %s kept for its overlap", previous, currentKey)
	}
	newLease := runJSON("read", mount+"/creds/ci")

	// ---- back to the previous release: refused, nothing touched ----
	switchTo(oldVersion)
	keysBefore := len(fake.Keys())
	out, err := s.Vault("read", mount+"/static-creds/app")
	if err == nil || !strings.Contains(err.Error()+out, "vault secrets tune -plugin-version="+formatUpgradeVersion) {
		t.Fatalf("the previous release served a format 4 mount: %v %s", err, out)
	}
	if _, err := s.Vault("lease", "revoke", "-sync", newLease["lease_id"].(string)); err == nil {
		t.Fatal("the previous release revoked a lease of a format 4 mount it cannot read")
	}
	if _, err := s.Vault("write", mount+"/tidy", "min_age=0s"); err == nil {
		t.Fatal("the previous release ran tidy on a format 4 mount")
	}
	time.Sleep(overlap) // the overlap's end falls due: nothing may run it
	if n := len(fake.Keys()); n != keysBefore {
		t.Fatalf("the refusing previous release changed the upstream: %d keys, was %d", n, keysBefore)
	}

	// ---- up again: everything is picked up ----
	switchTo(formatUpgradeVersion)
	if id, _ := staticKey(); id != newKey {
		t.Fatalf("static role after upgrading again: key %s, want %s", id, newKey)
	}
	run("lease", "revoke", "-sync", newLease["lease_id"].(string))
	eventually(t, 15*time.Second, "the overlap that fell due while refused ends", func() bool { return !exists(fake, currentKey) })
	run("delete", mount+"/static-roles/app")
	if left := fake.Keys(); len(left) != 1 || left[0].ID != releasedKey {
		t.Fatalf("keys upstream after the lease and the static role are gone: %v, want only the released key %s", left, releasedKey)
	}
}
