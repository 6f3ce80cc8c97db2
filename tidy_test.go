package carbon

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiqtest"
)

// A static role's key is recorded in the inventory before the role is
// written; when the role write fails and so does the rollback's removal of
// the record, tidy forgets the record (the role is what holds a static
// key), and the key stays deleted upstream.
func TestTidyForgetsTheRecordOfARotationInterruptedBeforeItsRole(t *testing.T) {
	s, e, current := newStaticRoleEnv(t, nil)
	s.setHook(failEither(failAlways("put", staticRoleStoragePrefix+"app"), failAlways("delete", keyListPrefix)))
	if resp, err := e.doErr(logical.UpdateOperation, "rotate-role/app", nil); err == nil && !resp.IsError() {
		t.Fatal("the rotation succeeded although its role write failed")
	}
	s.setHook(nil)
	if listed := e.listedKeys(); len(listed) != 2 {
		t.Fatalf("the failed rotation's record should still be listed before tidy; keys/ = %v", listed)
	}

	report := e.tidyNow()
	listed := e.listedKeys()
	if len(listed) != 1 || listed[current] != "app" {
		t.Fatalf("after tidy keys/ must list only the role's key %s; it lists %v (report %v)", current, listed, report)
	}
	if stale, _ := report["stale_records"].([]string); len(stale) != 1 {
		t.Fatalf("tidy should report the one stale record; report %v", report)
	}
	for _, k := range e.climatiq.Keys() {
		if k.ID != current {
			t.Fatalf("the failed rotation's key %s is still upstream", k.ID)
		}
	}
}

// An adoption whose role write fails, and whose undo fails too, leaves an
// inventory record for a role that does not hold the key: tidy forgets it
// and keeps the key, which its release record still holds.
func TestTidyForgetsTheRecordOfAFailedAdoptionAndKeepsTheKey(t *testing.T) {
	s, e, keyID := newStaticRoleEnv(t, map[string]any{"delete_key_on_remove": false})
	e.mustOK(logical.DeleteOperation, "static-roles/app", nil)
	s.setHook(failEither(failAlways("put", staticRoleStoragePrefix+"again"), failAlways("delete", keyListPrefix)))
	if resp, err := e.doErr(logical.CreateOperation, "static-roles/again", map[string]any{
		"config": "cq", "project_id": e.projectID, "rotation_period": "1h", "key_id": keyID,
	}); err == nil && !resp.IsError() {
		t.Fatal("the adoption succeeded although its role write failed")
	}
	s.setHook(nil)
	if listed := e.listedKeys(); listed[keyID] != "again" {
		t.Fatalf("the failed adoption's record should be listed before tidy; keys/ = %v", listed)
	}

	e.tidyNow()
	if listed := e.listedKeys(); len(listed) != 0 {
		t.Fatalf("after tidy keys/ lists %v; no role holds a key", listed)
	}
	if !e.upstreamHas(keyID) {
		t.Fatal("tidy deleted the released key")
	}
	// The key can be adopted again.
	e.mustOK(logical.CreateOperation, "static-roles/again", map[string]any{
		"config": "cq", "project_id": e.projectID, "rotation_period": "1h", "key_id": keyID,
	})
	if listed := e.listedKeys(); listed[keyID] != "again" {
		t.Fatalf("keys/ = %v after the adoption", listed)
	}
}

// A rotation that holds its role's lock between its inventory record and
// its role write is never judged half-done by a tidy that runs meanwhile.
func TestTidyDuringARotationKeepsTheNewKeysRecord(t *testing.T) {
	s, e, _ := newStaticRoleEnv(t, nil)

	tidyDone := make(chan struct{})
	var recorded, blocking atomic.Bool
	var roleReads atomic.Int32
	s.setHook(func(op, key string) error {
		if op == "get" && key == staticRoleStoragePrefix+"app" && blocking.Load() {
			roleReads.Add(1) // tidy's: the rotation waits in this hook
		}
		// After the new key's record and before its role write, let tidy
		// run until it has read the role twice (its scan, then its check
		// of the record), or, as it should, waits for the role's lock.
		if op == "put" && strings.HasPrefix(key, keyListPrefix) {
			recorded.Store(true)
		}
		if op == "put" && key == staticRoleStoragePrefix+"app" && recorded.Load() && blocking.CompareAndSwap(false, true) {
			go func() {
				defer close(tidyDone)
				if resp, err := e.doErr(logical.UpdateOperation, "tidy", map[string]any{"min_age": "0s"}); err != nil || resp.IsError() {
					t.Errorf("tidy: %v %v", resp, err)
				}
			}()
			for deadline := time.Now().Add(time.Second); roleReads.Load() < 2 && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
		}
		return nil
	})
	e.mustOK(logical.UpdateOperation, "rotate-role/app", nil)
	<-tidyDone
	s.setHook(nil)
	role := e.staticRole("app")
	listed := e.listedKeys()
	for _, k := range role.ownedKeys("app") {
		if listed[k.KeyID] != "app" {
			t.Fatalf("keys/ lacks the role's key %s: %v", k.KeyID, listed)
		}
	}
}

// A pending rollback deletes what an interrupted creation made, in the
// account it was made in: a connection is not re-pointed to an account
// that cannot see the project of a pending entry, nor, while a per-lease
// project creation awaits its rollback, to another account at all.
func TestRepointingAConnectionKeepsPendingRollbacksInReach(t *testing.T) {
	other := climatiqtest.NewServer("other-account-key")
	t.Cleanup(other.Close)
	other.AddProject("elsewhere")
	repoint := map[string]any{"management_url": other.ManagementURL(), "api_url": other.APIURL(), "management_key": "other-account-key"}

	for _, tc := range []struct {
		name  string
		kind  string
		entry any
		field string
	}{
		{"a rotation's key in a project", walKindClimatiqKey, func(e *testEnv) any {
			return &ownedKey{Kind: keyKindStatic, Config: "cq", Role: "app", ProjectID: e.projectID, KeyName: "vault-x"}
		}, "cannot see project"},
		{"a block of issuances in a project", walKindIssuanceBlock, func(e *testEnv) any {
			return &issuanceBlock{ID: "b1", Config: "cq", ProjectID: e.projectID, Marker: "m", NoncePrefix: "abc"}
		}, "cannot see project"},
		{"a block of per-lease projects", walKindIssuanceBlock, func(*testEnv) any {
			return &issuanceBlock{ID: "b2", Config: "cq", ProjectPerLease: true, Marker: "m", NoncePrefix: "abc"}
		}, "per-lease project creations awaiting rollback"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.writeClimatiqConfig("cq", nil)
			walID, err := framework.PutWAL(context.Background(), e.storage, tc.kind, tc.entry.(func(*testEnv) any)(e))
			if err != nil {
				t.Fatal(err)
			}
			e.mustFail(logical.UpdateOperation, "config/cq", repoint, tc.field)
			// Resolved, the re-point goes through.
			if err := framework.DeleteWAL(context.Background(), e.storage, walID); err != nil {
				t.Fatal(err)
			}
			e.mustOK(logical.UpdateOperation, "config/cq", repoint)
		})
	}
}

// A static role delete writes the role's removal first: when that write
// fails, every key the role still holds stays listed.
func TestAFailedStaticRoleDeleteKeepsItsKeysListed(t *testing.T) {
	for _, deleteKeys := range []bool{false, true} {
		s, e, _ := newStaticRoleEnv(t, map[string]any{
			"rotation_period": "2h", "overlap_period": "1h", "delete_key_on_remove": deleteKeys,
		})
		e.mustOK(logical.UpdateOperation, "rotate-role/app", nil)
		s.setHook(failAlways("delete", staticRoleStoragePrefix+"app"))
		if resp, err := e.doErr(logical.DeleteOperation, "static-roles/app", nil); err == nil && !resp.IsError() {
			t.Fatal("the delete succeeded although its role write failed")
		}
		s.setHook(nil)
		role := e.staticRole("app")
		listed := e.listedKeys()
		for _, k := range role.ownedKeys("app") {
			if listed[k.KeyID] != "app" {
				t.Fatalf("delete_key_on_remove=%v: the role still holds key %s, which keys/ no longer lists: %v",
					deleteKeys, k.KeyID, slices.Sorted(maps.Keys(listed)))
			}
		}
	}
}

// A static role deleted with delete_key_on_remove=false while a tidy runs,
// after the tidy read the release records and before it read the roles:
// the key's release is written before the role goes, and tidy, finding no
// role holding the key, looks for it again. The released key stays.
func TestARoleReleasingItsKeyDuringTidyKeepsTheKey(t *testing.T) {
	s, e, keyID := newStaticRoleEnv(t, map[string]any{"delete_key_on_remove": false})
	clock := newFakeClock()
	e.b.clock = clock.Now
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID}) // tidy scans the project
	clock.Advance(time.Hour)                                                     // the key is old enough for any min_age

	tidyWaits, deleted, tidyDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var releasesRead, once atomic.Bool
	s.setHook(func(op, key string) error {
		// The hook runs before each call: pause at the call after tidy's
		// read of the release records, its list of the static roles.
		if op == "list" && key == releasedStoragePrefix {
			releasesRead.Store(true)
		}
		if op == "list" && key == staticRoleStoragePrefix && releasesRead.Load() && once.CompareAndSwap(false, true) {
			close(tidyWaits)
			select {
			case <-deleted:
			case <-time.After(5 * time.Second):
			}
		}
		return nil
	})
	go func() {
		defer close(tidyDone)
		if resp, err := e.doErr(logical.UpdateOperation, "tidy", map[string]any{"min_age": "0s"}); err != nil || resp.IsError() {
			t.Errorf("tidy: %v %v", resp, err)
		}
	}()
	<-tidyWaits
	e.mustOK(logical.DeleteOperation, "static-roles/app", nil)
	close(deleted)
	<-tidyDone
	s.setHook(nil)
	if !e.upstreamHas(keyID) {
		t.Fatal("a tidy during the role's delete deleted the key the delete released")
	}
}

func TestTidyKeepsTheKeyOfARenewedLease(t *testing.T) {
	e := newTestEnv(t)
	clock := newFakeClock()
	e.b.clock = clock.Now
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID, "ttl": "30m", "max_ttl": "1h"})
	resp := e.mustOK(logical.ReadOperation, "creds/ci", nil)
	if resp.Secret.MaxTTL != time.Hour {
		t.Fatalf("lease max_ttl %s, want the recorded 1h", resp.Secret.MaxTTL)
	}
	keyID := resp.Data["key_id"].(string)

	// The operator raises max_ttl; the application renews for 5h.
	e.mustOK(logical.UpdateOperation, "roles/ci", map[string]any{"max_ttl": "10h"})
	resp.Secret.IssueTime = time.Now()
	renewed, err := e.renew(resp.Secret, 5*time.Hour)
	if err != nil || renewed.IsError() {
		t.Fatalf("renew: %v %v", renewed, err)
	}
	if renewed.Secret.TTL != 5*time.Hour {
		t.Fatalf("renewed ttl %s, want 5h", renewed.Secret.TTL)
	}

	// Past the first max_ttl and tidy's grace, the lease is still valid.
	clock.Advance(time.Hour + expiredGrace + time.Minute)
	report := e.mustOK(logical.UpdateOperation, "tidy", nil)
	if expired := report.Data["expired"].([]string); len(expired) != 0 {
		t.Fatalf("tidy took the renewed lease's key for expired: %v", expired)
	}
	if !e.upstreamHas(keyID) {
		t.Fatal("tidy deleted the key of a live, renewed lease")
	}
	// Past the renewed end and the grace, tidy does clean it up.
	clock.Advance(4*time.Hour + time.Minute)
	e.mustOK(logical.UpdateOperation, "tidy", nil)
	if e.upstreamHas(keyID) {
		t.Fatal("tidy kept a key whose lease must have ended")
	}
}

func testTidyKeepsAReleasedStaticKey(t *testing.T) {
	e := newTestEnv(t)
	clock := newFakeClock()
	e.b.clock = clock.Now
	e.writeClimatiqConfig("cq", nil)
	// A dynamic role in the same project makes tidy scan it.
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{
		"config": "cq", "project_id": e.projectID, "rotation_period": "1h", "overlap_period": "10m", "delete_key_on_remove": false,
	})
	e.mustOK(logical.UpdateOperation, "rotate-role/app", nil)
	role := e.staticRole("app")
	released := []string{role.KeyID, role.PreviousKeys[0].KeyID}
	e.mustOK(logical.DeleteOperation, "static-roles/app", nil)

	clock.Advance(2 * time.Hour)
	report := e.mustOK(logical.UpdateOperation, "tidy", nil)
	if orphans := report.Data["orphans"].([]string); len(orphans) != 0 {
		t.Fatalf("tidy took released keys for orphans: %v", orphans)
	}
	for _, id := range released {
		if !e.upstreamHas(id) {
			t.Fatalf("released key %s was deleted", id)
		}
	}
	// Adopting a released key takes it back; it is then held again.
	e.mustOK(logical.CreateOperation, "static-roles/again", map[string]any{
		"config": "cq", "project_id": e.projectID, "rotation_period": "1h", "key_id": released[0],
	})
	if ids, _ := releasedKeyIDs(context.Background(), e.storage); len(ids) != 1 || ids[0] != released[1] {
		t.Fatalf("released keys after adoption: %v, want [%s]", ids, released[1])
	}
}

// A static role deleted with delete_key_on_remove=false releases its key
// to the operator; a later tidy, which finds the marker on it, keeps it.
func testTidyKeepsAReleasedKeyOnceItsRoleIsGone(t *testing.T) {
	e, clock := regressEnv(t)
	e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{
		"config": "cq", "project_id": e.projectID, "rotation_period": 3600, "delete_key_on_remove": false,
	})
	keyID := e.mustOK(logical.ReadOperation, "static-roles/app", nil).Data["key_id"].(string)
	e.mustOK(logical.DeleteOperation, "static-roles/app", nil)
	// Any role on the project makes tidy scan it.
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	clock.Advance(time.Hour)
	e.mustOK(logical.UpdateOperation, "tidy", map[string]any{"config": "cq"})
	if _, found := e.climatiq.Key(keyID); !found {
		t.Fatalf("tidy deleted key %s, released by delete_key_on_remove=false", keyID)
	}
}

func TestTidyCoversOnlyClimatiqAndReportsRealErrors(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeAltruistiqConfig("aq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	e.writeRole("export", map[string]any{"config": "aq"})

	report := e.mustOK(logical.UpdateOperation, "tidy", nil)
	if errs := report.Data["errors"].([]string); len(errs) != 0 {
		t.Fatalf("tidy reported errors on a healthy mount with an Altruistiq role: %v", errs)
	}

	e.climatiq.RevokeManagementKey(testManagementKey)
	report = e.mustOK(logical.UpdateOperation, "tidy", nil)
	errs := report.Data["errors"].([]string)
	if len(errs) != 1 || !strings.Contains(errs[0], `config "cq"`) || !strings.Contains(errs[0], "401") {
		t.Fatalf("errors %v, want one naming the connection and the upstream's 401", errs)
	}
	status := e.mustOK(logical.ReadOperation, "tidy-status", nil)
	if got := status.Data["errors"].([]string); len(got) != 1 || status.Data["finished"] == "" {
		t.Fatalf("tidy-status does not show the last run: %v", status.Data)
	}
}

// TestTidyKeepsReleasedStaticKeys: a key released with
// delete_key_on_remove=false carries the mount's marker, and tidy keeps it,
// while its role exists and after.
func TestTidyKeepsReleasedStaticKeys(t *testing.T) {
	t.Run("released by a role delete", testTidyKeepsAReleasedStaticKey)
	t.Run("once its role is gone", testTidyKeepsAReleasedKeyOnceItsRoleIsGone)
}
