package acceptance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/altruistiq"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/keyname"
)

// The questions the report answers: what the documents leave open.
const (
	qWrongKey         = "Answer to a wrong management key (through config verify)"
	qMissingKey       = "Status for DELETE of a key id that no longer exists"
	qFabricatedKey    = "Status for DELETE of a key id that never existed"
	qFabricatedProj   = "Status for DELETE of a project id that never existed"
	qNameLimit        = "Key name length limit"
	qRetryAfter       = "Retry-After on 429 (and 503)"
	qKeyWorks         = "Time until a new key works against the regular API"
	qKeyStops         = "Time until a revoked key stops working"
	qWrongSecret      = "Answer to a wrong Altruistiq client secret (through config verify)"
	qTokenLifetime    = "Altruistiq token lifetime"
	keyWorksWithin    = 90 * time.Second
	keyStopsWithin    = 2 * time.Minute
	nameLengthsToTry  = "64,128,256,512,1024" // bounded: five creates at most
	upstreamCallLimit = 2 * time.Minute
)

func TestAcceptance(t *testing.T) {
	t.Run("climatiq", func(t *testing.T) {
		if cqTarget == nil {
			t.Skip("no Climatiq credentials: set " + envCQKey)
		}
		testClimatiq(t)
	})
	t.Run("altruistiq", func(t *testing.T) {
		if aqTarget == nil {
			t.Skip("no Altruistiq credentials: set " + envAQID + " and " + envAQSecret)
		}
		testAltruistiq(t)
	})
}

func testClimatiq(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	c := managementClient(t)
	runMarker := randomPart(keyname.MarkerLength)
	ledger.addMarker(runMarker)
	fmt.Println("acceptance: resources this run makes by hand carry marker", runMarker)

	if !t.Run("connection verify", func(t *testing.T) {
		cli(t, "write", mount+"/config/cq", "provider=climatiq",
			"management_key="+cqTarget.managementKey,
			"management_url="+cqTarget.managementURL,
			"api_url="+cqTarget.apiURL)
		raw, _ := json.Marshal(cliJSON(t, "read", "-format=json", mount+"/config/cq").Data)
		if strings.Contains(string(raw), cqTarget.managementKey) {
			t.Fatal("config read returns the management key")
		}
		wrong := "acceptance-wrong-" + randomPart(24)
		_, err := vault.Vault("write", mount+"/config/cq-wrong", "provider=climatiq", "management_key="+wrong,
			"management_url="+cqTarget.managementURL, "api_url="+cqTarget.apiURL)
		if err == nil {
			t.Fatal("a wrong management key was accepted: the connection check proves nothing")
		}
		msg := vaultError(err)
		report.note(qWrongKey, "%s", msg)
		if strings.Contains(err.Error(), wrong) {
			t.Fatal("the refusal echoes the key")
		}
		if fake != nil && !strings.Contains(msg, "401") {
			t.Fatalf("the refusal lacks the upstream's 401: %s", msg)
		}
	}) {
		return
	}

	projectID := cqTarget.projectID
	if projectID == "" {
		p, err := c.CreateProject(ctx, markedName(t, runMarker, time.Now(), "acceptance"))
		if err != nil {
			t.Fatalf("creating the run's project: %v", err)
		}
		ledger.create("project %s (%s)", p.ID, p.Name)
		projectID = p.ID
		t.Cleanup(func() { deleteProject(t, c, p.ID, p.Name, "at the end of the run") })
	}

	var mountMarker string
	t.Run("dynamic key works, then stops after revoke", func(t *testing.T) {
		cli(t, "write", mount+"/roles/dyn", "config=cq", "project_id="+projectID, "ttl=5m", "max_ttl=10m")
		s := cliJSON(t, "read", "-format=json", mount+"/creds/dyn")
		keyID, apiKey, name := str(s, "key_id"), str(s, "api_key"), str(s, "key_name")
		if keyID == "" || apiKey == "" || s.LeaseID == "" {
			t.Fatalf("creds answer incomplete: lease %q, key id %q", s.LeaseID, keyID)
		}
		ledger.create("key %s (%s) in project %s, through Vault", keyID, name, projectID)
		m, _, ok := keyname.Parse(name)
		if !ok {
			t.Fatalf("issued key name %q lacks the marker prefix", name)
		}
		mountMarker = m
		ledger.addMarker(m)
		revoked := false
		t.Cleanup(func() {
			if !revoked {
				_, _ = vault.Vault("lease", "revoke", "-sync", s.LeaseID)
			}
			deleteKeyIfListed(t, c, projectID, keyID, name)
		})

		took, works := poll(keyWorksWithin, func() bool { return c.CheckKey(ctx, apiKey) == nil })
		noteTime(qKeyWorks, "dynamic key", took, works, keyWorksWithin)
		if !works {
			t.Fatalf("the issued key was not accepted by the regular API within %s", keyWorksWithin)
		}
		if !listed(t, c, projectID, keyID) {
			t.Fatal("the issued key is not in its project's key list")
		}

		cli(t, "lease", "revoke", "-sync", s.LeaseID)
		revoked = true
		if listed(t, c, projectID, keyID) {
			t.Fatal("the key is still listed after its lease was revoked")
		}
		ledger.delete("key %s (%s), by revoking its lease", keyID, name)
		took, stopped := poll(keyStopsWithin, func() bool {
			err := c.CheckKey(ctx, apiKey)
			return errors.Is(err, climatiq.ErrUnauthorized) || errors.Is(err, climatiq.ErrForbidden)
		})
		noteTime(qKeyStops, "dynamic key after lease revoke", took, stopped, keyStopsWithin)
		if !stopped {
			t.Fatalf("the revoked key still works after %s", keyStopsWithin)
		}

		// What a missing id is answered with; the plugin must see each as gone.
		err := c.DeleteKey(ctx, keyID)
		report.note(qMissingKey, "%s", statusOf(err))
		if err := c.DeleteProjectKey(ctx, projectID, keyID); err != nil && !errors.Is(err, climatiq.ErrNotFound) {
			t.Errorf("deleting the revoked key again is not taken as already gone: %v", err)
		}
		report.note(qFabricatedKey, "%s", statusOf(c.DeleteKey(ctx, "acceptance-no-such-key-"+randomPart(8))))
		err = c.DeleteProject(ctx, "acceptance-no-such-project-"+randomPart(8))
		report.note(qFabricatedProj, "%s", statusOf(err))
		if err != nil && !errors.Is(err, climatiq.ErrNotFound) {
			t.Errorf("deleting a project that never existed is not taken as gone: %v", err)
		}
		if fake != nil {
			if got, _ := report.get(qMissingKey); !strings.HasPrefix(got, "404 ") {
				t.Errorf("the fake answers a missing key 404, the report says %q", got)
			}
		}
	})

	t.Run("per-lease project created and deleted", func(t *testing.T) {
		cli(t, "write", mount+"/roles/lease", "config=cq", "project_per_lease=true", "ttl=5m", "max_ttl=10m")
		s := cliJSON(t, "read", "-format=json", mount+"/creds/lease")
		pid, keyID, apiKey := str(s, "project_id"), str(s, "key_id"), str(s, "api_key")
		if pid == "" || pid == projectID || keyID == "" {
			t.Fatalf("per-lease creds answer: project %q key %q", pid, keyID)
		}
		name := projectName(t, c, pid)
		ledger.create("project %s (%s) with key %s, through Vault", pid, name, keyID)
		revoked := false
		t.Cleanup(func() {
			if !revoked {
				_, _ = vault.Vault("lease", "revoke", "-sync", s.LeaseID)
			}
			if projectName(t, c, pid) != "" {
				deleteProject(t, c, pid, name, "in cleanup")
			}
		})
		if m, _, ok := keyname.Parse(name); !ok || (mountMarker != "" && m != mountMarker) {
			t.Fatalf("per-lease project name %q does not carry the mount's marker %s", name, mountMarker)
		}
		took, works := poll(keyWorksWithin, func() bool { return c.CheckKey(ctx, apiKey) == nil })
		noteTime(qKeyWorks, "key in a per-lease project", took, works, keyWorksWithin)
		if !works {
			t.Fatal("the per-lease project's key is not accepted")
		}
		cli(t, "lease", "revoke", "-sync", s.LeaseID)
		revoked = true
		if projectName(t, c, pid) != "" {
			t.Fatal("the per-lease project is still there after its lease was revoked")
		}
		ledger.delete("project %s (%s) with its key, by revoking its lease", pid, name)
	})

	t.Run("static role rotated with overlap", func(t *testing.T) {
		cli(t, "write", mount+"/static-roles/st", "config=cq", "project_id="+projectID, "rotation_period=1h", "overlap_period=10m")
		var keys []string // every key the role held, for cleanup
		t.Cleanup(func() {
			_, _ = vault.Vault("delete", mount+"/static-roles/st")
			for _, id := range keys {
				deleteKeyIfListed(t, c, projectID, id, "of static role st")
			}
		})
		s1 := cliJSON(t, "read", "-format=json", mount+"/static-creds/st")
		key1, key1ID := str(s1, "api_key"), str(s1, "key_id")
		keys = append(keys, key1ID)
		ledger.create("key %s (%s), static role st, through Vault", key1ID, str(s1, "key_name"))
		took, works := poll(keyWorksWithin, func() bool { return c.CheckKey(ctx, key1) == nil })
		noteTime(qKeyWorks, "static role's key", took, works, keyWorksWithin)
		if !works {
			t.Fatal("the static role's key is not accepted")
		}

		key2ID := str(cliJSON(t, "write", "-format=json", "-f", mount+"/rotate-role/st"), "key_id")
		s2 := cliJSON(t, "read", "-format=json", mount+"/static-creds/st")
		keys = append(keys, key2ID)
		ledger.create("key %s (%s), static role st rotated, through Vault", key2ID, str(s2, "key_name"))
		if str(s2, "key_id") != key2ID || str(s2, "previous_key_id") != key1ID {
			t.Fatalf("after rotate-role: key %q previous %q; want %q and %q", str(s2, "key_id"), str(s2, "previous_key_id"), key2ID, key1ID)
		}
		if !listed(t, c, projectID, key1ID) || c.CheckKey(ctx, key1) != nil {
			t.Fatal("the replaced key stopped working during its overlap")
		}
		if _, works := poll(keyWorksWithin, func() bool { return c.CheckKey(ctx, str(s2, "api_key")) == nil }); !works {
			t.Fatal("the rotated key is not accepted")
		}

		key3ID := str(cliJSON(t, "write", "-format=json", mount+"/rotate-role/st", "delete_previous_keys=true"), "key_id")
		keys = append(keys, key3ID)
		ledger.create("key %s, static role st rotated with delete_previous_keys, through Vault", key3ID)
		for _, id := range []string{key1ID, key2ID} {
			if listed(t, c, projectID, id) {
				t.Fatalf("key %s is still listed after rotate-role delete_previous_keys=true", id)
			}
			ledger.delete("key %s, by rotate-role delete_previous_keys=true", id)
		}
		cli(t, "delete", mount+"/static-roles/st")
		if listed(t, c, projectID, key3ID) {
			t.Fatal("deleting the static role left its key upstream")
		}
		ledger.delete("key %s, by deleting static role st", key3ID)
	})

	t.Run("tidy dry run", func(t *testing.T) {
		if mountMarker == "" {
			t.Fatal("the mount's marker is unknown: the dynamic key step failed")
		}
		// An orphan as a crash would leave it: the mount's marker, an hour old.
		name := markedName(t, mountMarker, time.Now().Add(-time.Hour), "acceptance-orphan")
		k, err := c.CreateKey(ctx, projectID, name)
		if err != nil {
			t.Fatalf("creating an orphan key: %v", err)
		}
		ledger.create("key %s (%s), an orphan for tidy", k.ID, name)
		t.Cleanup(func() { deleteKeyIfListed(t, c, projectID, k.ID, name) })

		out := cliJSON(t, "write", "-format=json", mount+"/tidy", "dry_run=true", "config=cq")
		orphans, _ := out.Data["orphans"].([]any)
		if len(orphans) != 1 || orphans[0] != k.ID {
			t.Fatalf("tidy dry run reported orphans %v, want exactly [%s]", orphans, k.ID)
		}
		if n, _ := out.Data["deleted"].(json.Number); n.String() != "0" {
			t.Fatalf("a dry run deleted %s", n)
		}
		if !listed(t, c, projectID, k.ID) {
			t.Fatal("a dry run deleted the orphan")
		}
	})

	t.Run("name length limit", func(t *testing.T) {
		// Doubling lengths find a bracket, bisection narrows it: a dozen
		// creates at most, each deleted at once.
		tried := 0
		try := func(n int) (bool, string) {
			tried++
			base := markedName(t, runMarker, time.Now(), "")
			name := base + "-" + strings.Repeat("x", n-len(base)-1)
			k, err := c.CreateKey(ctx, projectID, name)
			if err != nil {
				return false, statusOf(err)
			}
			ledger.create("key %s (a %d-character name)", k.ID, n)
			if err := c.DeleteProjectKey(ctx, projectID, k.ID); err != nil {
				t.Errorf("deleting the probe key %s: %v", k.ID, err)
			} else {
				ledger.delete("key %s (a %d-character name)", k.ID, n)
			}
			return true, ""
		}
		accepted, refused, answer := 0, 0, ""
		for _, n := range lengths(t) {
			ok, why := try(n)
			if !ok {
				refused, answer = n, why
				break
			}
			accepted = n
		}
		switch {
		case accepted == 0:
			report.note(qNameLimit, "the shortest probe (%d characters) was refused: %s", refused, answer)
			t.Fatalf("a %d-character key name was refused: %s", refused, answer)
		case refused == 0:
			report.note(qNameLimit, "none refused up to %d characters", accepted)
			return
		}
		for refused-accepted > 1 && tried < 12 {
			mid := (accepted + refused) / 2
			if ok, why := try(mid); ok {
				accepted = mid
			} else {
				refused, answer = mid, why
			}
		}
		report.note(qNameLimit, "%d characters accepted; %d refused: %s", accepted, refused, answer)
		if fake != nil && (accepted != fakeNameLimit || refused != fakeNameLimit+1 || !strings.HasPrefix(answer, "400")) {
			t.Errorf("the fake refuses names over %d characters; the probe found %d accepted, %d refused (%s)", fakeNameLimit, accepted, refused, answer)
		}
	})

	t.Run("retry-after", func(t *testing.T) {
		if fake != nil {
			// Proves the recorder on the fake only: against the real service
			// the suite never provokes a rate limit.
			fake.climatiq.FailNextMethod("GET", 1, 429)
			if _, err := c.ListProjects(ctx); err != nil {
				t.Fatal(err)
			}
		}
		n, seen := cqRecorder.seen()
		if len(seen) == 0 {
			report.note(qRetryAfter, "none seen: no 429 or 503 in the suite's own %d requests (none provoked on purpose)", n)
			return
		}
		report.note(qRetryAfter, "%s (in the suite's own %d requests)", strings.Join(seen, "; "), n)
		if fake != nil && !slices.ContainsFunc(seen, func(s string) bool { return strings.HasPrefix(s, "429") && strings.HasSuffix(s, "Retry-After 1") }) {
			t.Errorf("the fake's 429 with Retry-After 1 was not recorded: %v", seen)
		}
	})
}

func testAltruistiq(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if !t.Run("connection verify", func(t *testing.T) {
		cli(t, "write", mount+"/config/aq", "provider=altruistiq",
			"client_id="+aqTarget.clientID, "client_secret="+aqTarget.clientSecret,
			"token_url="+aqTarget.tokenURL, "api_url="+aqTarget.apiURL, "auth_style="+aqTarget.authStyle)
		wrong := "acceptance-wrong-" + randomPart(24)
		_, err := vault.Vault("write", mount+"/config/aq-wrong", "provider=altruistiq",
			"client_id="+aqTarget.clientID, "client_secret="+wrong,
			"token_url="+aqTarget.tokenURL, "api_url="+aqTarget.apiURL, "auth_style="+aqTarget.authStyle)
		if err == nil {
			t.Fatal("a wrong client secret was accepted: the connection check proves nothing")
		}
		report.note(qWrongSecret, "%s", vaultError(err))
		if strings.Contains(err.Error(), wrong) {
			t.Fatal("the refusal echoes the secret")
		}
	}) {
		return
	}
	t.Run("token accepted by the API", func(t *testing.T) {
		cli(t, "write", mount+"/roles/atq", "config=aq", "ttl=10m")
		s := cliJSON(t, "read", "-format=json", mount+"/creds/atq")
		t.Cleanup(func() { _, _ = vault.Vault("lease", "revoke", "-sync", s.LeaseID) })
		token := str(s, "access_token")
		expires, err := time.Parse(time.RFC3339, str(s, "expires_at"))
		if token == "" || err != nil {
			t.Fatalf("token answer incomplete: expires_at %q (%v)", str(s, "expires_at"), err)
		}
		report.note(qTokenLifetime, "expires %s after issue; lease %ds (role ttl 10m)", time.Until(expires).Round(time.Second), s.LeaseDuration)
		client, err := altruistiq.New(altruistiq.Options{
			TokenURL: aqTarget.tokenURL, APIURL: aqTarget.apiURL,
			ClientID: aqTarget.clientID, ClientSecret: aqTarget.clientSecret, AuthStyle: aqTarget.authStyle,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		if err := client.CheckToken(ctx, token); err != nil {
			t.Fatalf("the API refused the issued token: %v", err)
		}
	})
}

// lengths are the name lengths the probe tries, shortest first.
func lengths(t *testing.T) []int {
	var out []int
	for _, f := range strings.Split(nameLengthsToTry, ",") {
		var n int
		if _, err := fmt.Sscan(f, &n); err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	return out
}

func noteTime(question, what string, took time.Duration, ok bool, bound time.Duration) {
	if !ok {
		report.note(question, "%s: not within %s", what, bound)
		return
	}
	report.note(question, "%s: %s (polled with pauses from 0.25s doubling)", what, took.Round(10*time.Millisecond))
}

// vaultError keeps the lines of a CLI error that carry Vault's answer.
func vaultError(err error) string {
	var lines []string
	for _, l := range strings.Split(err.Error(), "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "* ") || strings.HasPrefix(l, "Code:") {
			lines = append(lines, strings.TrimPrefix(l, "* "))
		}
	}
	if len(lines) == 0 {
		return err.Error()
	}
	return strings.Join(lines, " ")
}

func listed(t *testing.T, c *climatiq.Client, projectID, keyID string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), upstreamCallLimit)
	defer cancel()
	keys, err := c.ListKeys(ctx, projectID)
	if err != nil {
		t.Fatalf("listing project %s: %v", projectID, err)
	}
	return slices.ContainsFunc(keys, func(k climatiq.APIKey) bool { return k.ID == keyID })
}

// projectName is a project's name, or "" when it is not listed.
func projectName(t *testing.T, c *climatiq.Client, id string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), upstreamCallLimit)
	defer cancel()
	projects, err := c.ListProjects(ctx)
	if err != nil {
		t.Fatalf("listing projects: %v", err)
	}
	for _, p := range projects {
		if p.ID == id {
			return p.Name
		}
	}
	return ""
}

func deleteKeyIfListed(t *testing.T, c *climatiq.Client, projectID, keyID, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), upstreamCallLimit)
	defer cancel()
	keys, err := c.ListKeys(ctx, projectID)
	if err != nil || !slices.ContainsFunc(keys, func(k climatiq.APIKey) bool { return k.ID == keyID }) {
		return // gone, or the final sweep finds it
	}
	if err := c.DeleteProjectKey(ctx, projectID, keyID); err != nil && !errors.Is(err, climatiq.ErrNotFound) {
		t.Errorf("cleanup: deleting key %s: %v", keyID, err)
		return
	}
	ledger.delete("key %s (%s) in cleanup", keyID, name)
}

func deleteProject(t *testing.T, c *climatiq.Client, id, name, when string) {
	ctx, cancel := context.WithTimeout(context.Background(), upstreamCallLimit)
	defer cancel()
	err := c.DeleteProject(ctx, id)
	switch {
	case errors.Is(err, climatiq.ErrNotFound):
	case err != nil:
		t.Errorf("deleting project %s: %v", id, err)
	default:
		ledger.delete("project %s (%s) with any keys left in it, %s", id, name, when)
	}
}
