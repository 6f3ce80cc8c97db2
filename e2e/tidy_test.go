package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiqtest"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/internal/devvault"
)

// interruptIssuance leaves the WAL entry of an interrupted issuance on
// connection config pending: the create lands upstream (on hang, which
// answers late) but its answer times out, and so does the rollback in the
// request. It returns the stranded key's id.
func interruptIssuance(t *testing.T, s *devvault.Server, hang *climatiqtest.Server, config string) string {
	t.Helper()
	run := func(args ...string) {
		t.Helper()
		if _, err := s.Vault(args...); err != nil {
			t.Fatal(err)
		}
	}
	hangProject := hang.AddProject("hang").ID
	run("write", mount+"/config/"+config, "provider=climatiq", "management_key="+managementKey,
		"management_url="+hang.ManagementURL(), "api_url="+hang.APIURL(), "request_timeout=1s", "max_retries=0")
	run("write", mount+"/roles/"+config, "config="+config, "project_id="+hangProject, "ttl=1h")
	hang.SetCompleteAbandoned(true)
	hang.SetLatency(3 * time.Second)
	// One attempt: the CLI would retry the 5xx and interrupt three issuances.
	once, err := api.NewClient(&api.Config{Address: "http://" + s.Addr, Timeout: 30 * time.Second, MaxRetries: 0})
	if err != nil {
		t.Fatal(err)
	}
	once.SetToken(s.Token)
	if _, err := once.Logical().Read(mount + "/creds/" + config); err == nil {
		t.Fatal("issuance against a hanging upstream succeeded")
	}
	eventually(t, 10*time.Second, "the interrupted create lands upstream", func() bool { return len(hang.Keys()) == 1 })
	stranded := hang.Keys()[0].ID
	time.Sleep(3 * time.Second) // the in-request rollback's calls finish (and fail) before the upstream recovers
	hang.SetLatency(0)
	if _, ok := hang.Key(stranded); !ok {
		t.Fatal("the interrupted issuance was rolled back in the request: no pending WAL entry to carry over")
	}
	return stranded
}

// tidyData is the data of a tidy or tidy-status answer, read through the
// CLI as an operator does.
func tidyData(t *testing.T, args ...string) map[string]any {
	t.Helper()
	return tidyDataOn(t, vault, args...)
}

// tidyDataOn is tidyData on another server.
func tidyDataOn(t *testing.T, s *devvault.Server, args ...string) map[string]any {
	t.Helper()
	out, err := s.Vault(append([]string{args[0], "-format=json"}, args[1:]...)...)
	if err != nil {
		t.Fatal(err)
	}
	var secret struct {
		Data     map[string]any `json:"data"`
		Warnings []string       `json:"warnings"`
	}
	if err := json.Unmarshal([]byte(out), &secret); err != nil {
		t.Fatalf("decoding %q: %v", out, err)
	}
	if secret.Data == nil {
		t.Fatalf("%v answered no data: %s", args, out)
	}
	secret.Data["warnings"] = strings.Join(secret.Warnings, "\n")
	return secret.Data
}

func connectionOf(t *testing.T, report map[string]any, config string) map[string]any {
	t.Helper()
	c, _ := report["connections"].(map[string]any)[config].(map[string]any)
	return c
}

// TestTidyRunsInTheBackgroundAndIsolatesConnections: one connection whose
// upstream hangs, with a stale WAL entry of its own, no longer holds up
// tidy. config=<the healthy one> finishes at once without touching the
// other's WAL entry; a dry run lists that entry; a tidy of everything
// answers at once, shows the healthy connection done and the hanging one
// still running in tidy-status, and ends with the hanging one failed and
// named in its errors. Once the upstream answers again, tidy rolls the
// entry back and nothing of the mount's is left upstream.
func TestTidyRunsInTheBackgroundAndIsolatesConnections(t *testing.T) {
	hang := climatiqtest.NewServer(managementKey)
	defer hang.Close()
	stranded := interruptIssuance(t, vault, hang, "cq-stuck")
	writeClimatiqConfig(t, "cq-healthy")
	cli(t, "write", mount+"/roles/healthy", "config=cq-healthy", "project_id="+projectID, "ttl=1h")
	// The reload makes the entry stale: no issuance of the new instance
	// can be in flight under it.
	cli(t, "write", "sys/plugins/reload/backend", "mounts="+mount+"/")
	time.Sleep(2 * time.Second)

	dry := tidyData(t, "write", mount+"/tidy", "config=cq-stuck", "min_age=0s", "dry_run=true")
	wal, _ := dry["stale_wal"].([]any)
	if dry["state"] != "finished" || len(wal) != 1 || wal[0].(map[string]any)["kind"] == "" {
		t.Fatalf("dry run of cq-stuck: %v; want finished, listing its one stale WAL entry", dry)
	}
	if _, ok := hang.Key(stranded); !ok {
		t.Fatal("a dry run rolled back the stranded key")
	}

	hang.SetCompleteAbandoned(false)
	hang.SetLatency(time.Hour) // answers nothing from here on; every call ends at request_timeout
	defer hang.SetLatency(0)
	// Each of its calls now takes its whole request_timeout: the WAL
	// rollback's, then the scan's, 30 s in all.
	cli(t, "write", mount+"/config/cq-stuck", "request_timeout=15s", "verify_connection=false")
	began := time.Now()
	healthyOnly := tidyData(t, "write", mount+"/tidy", "config=cq-healthy", "min_age=0s")
	if took := time.Since(began); took > 10*time.Second || healthyOnly["state"] != "finished" || connectionOf(t, healthyOnly, "cq-stuck") != nil {
		t.Fatalf("tidy config=cq-healthy beside a hanging connection with a stale WAL entry: %s, %v; want it finished at once, cq-stuck untouched", took, healthyOnly)
	}

	began = time.Now()
	started := tidyData(t, "write", mount+"/tidy", "min_age=0s")
	if took := time.Since(began); took > 10*time.Second || started["state"] != "running" || !strings.Contains(started["warnings"].(string), "tidy-status") {
		t.Fatalf("tidy of every connection beside a hanging one: after %s: %v; want a running answer at once pointing at tidy-status", took, started)
	}
	status := tidyData(t, "read", mount+"/tidy-status")
	if healthy := connectionOf(t, status, "cq-healthy"); status["state"] != "running" || healthy["outcome"] != "succeeded" {
		t.Fatalf("tidy-status while cq-stuck hangs: %v; want running, cq-healthy succeeded", status)
	}
	if stuck := connectionOf(t, status, "cq-stuck"); stuck["state"] == "finished" {
		t.Fatalf("cq-stuck finished while its upstream hangs: %v", stuck)
	}

	eventually(t, 60*time.Second, "the run ends on its own", func() bool {
		return tidyData(t, "read", mount+"/tidy-status")["state"] == "finished"
	})
	status = tidyData(t, "read", mount+"/tidy-status")
	stuck := connectionOf(t, status, "cq-stuck")
	errs, _ := stuck["errors"].([]any)
	if stuck["outcome"] != "failed" || len(errs) == 0 || !strings.Contains(errs[0].(string), `config "cq-stuck"`) {
		t.Fatalf("cq-stuck after the run: %v; want failed, its errors naming it", stuck)
	}
	if _, ok := hang.Key(stranded); !ok {
		t.Fatal("the stranded key went while its upstream answered nothing")
	}

	hang.SetLatency(0)
	done := tidyData(t, "write", mount+"/tidy", "config=cq-stuck", "min_age=0s")
	if connectionOf(t, done, "cq-stuck")["outcome"] != "succeeded" || fmt.Sprint(done["wal_rolled_back"]) != "1" {
		t.Fatalf("tidy once cq-stuck answers: %v; want its WAL entry rolled back", done)
	}
	if _, ok := hang.Key(stranded); ok {
		t.Fatal("the stranded key survived the rollback")
	}
	cli(t, "delete", mount+"/roles/cq-stuck")
	cli(t, "delete", mount+"/config/cq-stuck")
}

// TestDeletingAConnectionWhoseUpstreamIsGone: a connection with a pending
// rollback whose upstream fails every request cannot be deleted plainly
// (the 400 gives the cause and the way out); abandon_rollbacks=true
// deletes it and names the covered keys and the carbon-sweep command,
// which, run as printed once the account answers, deletes exactly the
// stranded key.
func TestDeletingAConnectionWhoseUpstreamIsGone(t *testing.T) {
	hang := climatiqtest.NewServer(managementKey)
	defer hang.Close()
	stranded := interruptIssuance(t, vault, hang, "cq-gone")
	bystander := hang.AddKey(hang.Projects()[0].ID, "hand-made")
	cli(t, "delete", mount+"/roles/cq-gone")
	hang.SetFailureRate(1) // every management request: 503

	_, err := vault.Vault("delete", mount+"/config/cq-gone")
	if err == nil || !strings.Contains(err.Error(), "Code: 400") || !strings.Contains(err.Error(), "could not be resolved now") ||
		!strings.Contains(err.Error(), "abandon_rollbacks=true") {
		t.Fatalf("deleting a connection with a rollback its upstream refuses: %v; want a 400 with the cause and the way out", err)
	}

	out := cli(t, "delete", "-format=json", mount+"/config/cq-gone", "abandon_rollbacks=true")
	var answer struct {
		Data struct {
			Abandoned []struct {
				Covers string `json:"covers"`
				Sweep  string `json:"sweep"`
			} `json:"abandoned_rollbacks"`
		} `json:"data"`
		Warnings []string `json:"warnings"`
	}
	if err := json.Unmarshal([]byte(out), &answer); err != nil {
		t.Fatalf("decoding %q: %v", out, err)
	}
	if len(answer.Data.Abandoned) != 1 || len(answer.Warnings) != 1 || strings.Contains(out, managementKey) {
		t.Fatalf("abandoning delete answered %s; want one abandoned rollback, a warning, and no secret", out)
	}
	if _, err := vault.Vault("read", mount+"/config/cq-gone"); err == nil {
		t.Fatal("the connection survived its abandoning delete")
	}

	// The account answers again; the operator runs the command printed.
	hang.SetFailureRate(0)
	root, err := devvault.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "carbon-sweep"), "./cmd/carbon-sweep")
	build.Dir = root
	if msg, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building carbon-sweep: %v\n%s", err, msg)
	}
	sweep := exec.Command("sh", "-c", answer.Data.Abandoned[0].Sweep+" -delete -yes")
	sweep.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"), "CLIMATIQ_MANAGEMENT_KEY="+managementKey)
	if msg, err := sweep.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", answer.Data.Abandoned[0].Sweep, err, msg)
	}
	if _, ok := hang.Key(stranded); ok {
		t.Fatal("the printed sweep left the stranded key")
	}
	if _, ok := hang.Key(bystander.ID); !ok {
		t.Fatal("the printed sweep deleted a key it does not cover")
	}
}
