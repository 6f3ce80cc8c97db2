package carbon

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestStaticRoleValidation(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeAltruistiqConfig("aq", nil)
	base := func(kv ...any) map[string]any {
		d := map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": "1h"}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(d, kv[i].(string))
			} else {
				d[kv[i].(string)] = kv[i+1]
			}
		}
		return d
	}
	tests := []struct {
		name  string
		data  map[string]any
		field string
	}{
		{"missing config", base("config", nil), "config"},
		{"unknown config", base("config", "nope"), "config"},
		{"altruistiq config", base("config", "aq"), "config"},
		{"missing project", base("project_id", nil), "project_id"},
		{"no rotation policy", base("rotation_period", nil), "rotation_period"},
		{"period and schedule", base("rotation_schedule", "0 * * * *"), "rotation_schedule"},
		{"bad cron", base("rotation_period", nil, "rotation_schedule", "every tuesday"), "rotation_schedule"},
		{"cron with seconds field", base("rotation_period", nil, "rotation_schedule", "* * * * * *"), "rotation_schedule"},
		{"window without schedule", base("rotation_window", "2h"), "rotation_window"},
		{"window too short", base("rotation_period", nil, "rotation_schedule", "0 * * * *", "rotation_window", "10m"), "rotation_window: must be 3600 seconds or more"},
		{"unknown project", base("project_id", "prj_nope"), "project_id: no project \"prj_nope\""},
		{"period too short", base("rotation_period", "2s"), "rotation_period"},
		{"period beyond ten years", base("rotation_period", "87601h"), "rotation_period: must be at most 87600h"},
		{"fractional overlap", base("overlap_period", "2.5s"), "overlap_period: \"2.5s\" is not a whole number of seconds"},
		{"schedule that never fires", base("rotation_period", nil, "rotation_schedule", "0 0 30 2 *"), "rotation_schedule: \"0 0 30 2 *\" never fires"},
		{"manual with a period", base("disable_automated_rotation", true), "disable_automated_rotation: cannot be true"},
		{"manual with a schedule", base("rotation_period", nil, "rotation_schedule", "0 * * * *", "disable_automated_rotation", true), "disable_automated_rotation: cannot be true"},
		{"period not a duration", base("rotation_period", "often"), "rotation_period"},
		{"negative overlap", base("overlap_period", -5), "overlap_period"},
		{"overlap not shorter than period", base("overlap_period", "1h"), "overlap_period"},
		{"unknown key to adopt", base("key_id", "key_nope"), "key_id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.mustFail(logical.UpdateOperation, "static-roles/app", tc.data, tc.field)
		})
	}
	if n := len(e.climatiq.Keys()); n != 0 {
		t.Fatalf("refused writes left %d keys upstream", n)
	}
	// project_per_lease is a dynamic role's field: a static role is not
	// told to set it.
	if resp := e.do(logical.UpdateOperation, "static-roles/app", base("project_id", "prj_nope")); !resp.IsError() || strings.Contains(resp.Error().Error(), "use project_per_lease") {
		t.Fatalf("unknown project of a static role: %v", resp.Error())
	}

	e.mustOK(logical.CreateOperation, "static-roles/app", base())
	e.mustFail(logical.UpdateOperation, "static-roles/app", map[string]any{"project_id": "prj_other"}, "project_id")
	e.mustFail(logical.UpdateOperation, "static-roles/app", map[string]any{"config": "aq"}, "config")
	e.mustFail(logical.UpdateOperation, "static-roles/bad name", base(), "name")
	e.mustFail(logical.ReadOperation, "static-creds/nope", nil, "name")
	e.mustFail(logical.UpdateOperation, "rotate-role/nope", nil, "name")
}

func TestStaticRoleCreateReadAndCreds(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{
		"config": "cq", "project_id": e.projectID, "rotation_period": "1h", "overlap_period": "10m",
	})
	role := e.staticRole("app")
	if !e.upstreamHas(role.KeyID) {
		t.Fatal("static role key not created upstream")
	}

	creds := e.mustOK(logical.ReadOperation, "static-creds/app", nil)
	up, _ := e.climatiq.Key(role.KeyID)
	if creds.Data["api_key"] != up.Key || creds.Data["key_id"] != role.KeyID || creds.Secret != nil {
		t.Fatalf("static-creds = %v (lease %v)", creds.Data, creds.Secret)
	}
	ttl, ok := creds.Data["ttl"].(int64)
	if !ok || ttl < 3590 || ttl > 3600 || creds.Data["rotation_period"] != int64(3600) {
		t.Fatalf("ttl %v (%T) and rotation_period %v must be whole seconds", creds.Data["ttl"], creds.Data["ttl"], creds.Data["rotation_period"])
	}

	read := e.mustOK(logical.ReadOperation, "static-roles/app", nil)
	for _, field := range []string{"last_rotated", "next_rotation", "rotation_period", "overlap_period", "key_id"} {
		if read.Data[field] == nil || read.Data[field] == "" {
			t.Errorf("static role read lacks %s: %v", field, read.Data)
		}
	}
	if _, ok := read.Data["api_key"]; ok {
		t.Fatal("static role read returns the key value")
	}
	list := e.mustOK(logical.ListOperation, "static-roles/", nil)
	if keys := list.Data["keys"].([]string); len(keys) != 1 || keys[0] != "app" {
		t.Fatalf("list = %v", keys)
	}
}

func TestStaticRoleAdoptsExistingKey(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	existing := e.climatiq.AddKey(e.projectID, "hand-made")
	e.mustOK(logical.CreateOperation, "static-roles/adopted", map[string]any{
		"config": "cq", "project_id": e.projectID, "key_id": existing.ID, "rotation_period": "1h",
	})
	creds := e.mustOK(logical.ReadOperation, "static-creds/adopted", nil)
	if creds.Data["api_key"] != existing.Key || creds.Data["key_id"] != existing.ID {
		t.Fatalf("adopted creds = %v", creds.Data)
	}
	if st := e.climatiq.Stats(); st.KeysCreated != 0 {
		t.Fatalf("adoption created %d keys", st.KeysCreated)
	}
	// Rotating an adopted key replaces it with a key of the mount's own.
	e.mustOK(logical.UpdateOperation, "rotate-role/adopted", nil)
	if e.upstreamHas(existing.ID) {
		t.Fatal("adopted key survived a rotation without overlap")
	}
}

func TestStaticRoleDelete(t *testing.T) {
	tests := []struct {
		name     string
		deleteIt bool
	}{
		{"delete_key_on_remove=true", true},
		{"delete_key_on_remove=false", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.writeClimatiqConfig("cq", nil)
			e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{
				"config": "cq", "project_id": e.projectID, "rotation_period": "1h", "delete_key_on_remove": tc.deleteIt,
			})
			keyID := e.staticRole("app").KeyID
			e.mustOK(logical.DeleteOperation, "static-roles/app", nil)
			if e.upstreamHas(keyID) == tc.deleteIt {
				t.Fatalf("key present upstream = %v after delete with delete_key_on_remove=%v", !tc.deleteIt, tc.deleteIt)
			}
			if n, _ := countInventory(context.Background(), e.storage, keyKindStatic, "app"); n != 0 {
				t.Fatalf("%d inventory entries left", n)
			}
		})
	}
}

func TestStaticRotationOrderUnderFailures(t *testing.T) {
	tests := []struct {
		name string
		// inject breaks one step of the rotation.
		inject func(e *testEnv, s *failingStorage)
		// wantNewKey: the new key is in charge afterwards (else the old).
		wantNewKey      bool
		wantOldUpstream bool
		wantKeys        int
	}{
		{"upstream create fails", func(e *testEnv, _ *failingStorage) { e.climatiq.FailNext(1, http.StatusInternalServerError) }, false, true, 1},
		{"storage write fails", func(_ *testEnv, s *failingStorage) { s.failPutPrefix = staticRoleStoragePrefix }, false, true, 1},
		{"old-key delete fails", func(e *testEnv, _ *failingStorage) {
			e.climatiq.FailNextMethod(http.MethodDelete, 1, http.StatusInternalServerError)
		}, true, true, 2},
		{"nothing fails", func(*testEnv, *failingStorage) {}, true, false, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &failingStorage{Storage: &logical.InmemStorage{}}
			e := newTestEnvWithStorage(t, s)
			e.writeClimatiqConfig("cq", map[string]any{"max_retries": 0})
			e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": "1h"})
			old := e.staticRole("app")

			tc.inject(e, s)
			_, rotateErr := e.doErr(logical.UpdateOperation, "rotate-role/app", nil)
			s.failPutPrefix = ""

			now := e.staticRole("app")
			if inCharge := now.KeyID != old.KeyID; inCharge != tc.wantNewKey {
				t.Fatalf("new key in charge = %v, want %v (rotate error: %v)", inCharge, tc.wantNewKey, rotateErr)
			}
			if !e.upstreamHas(now.KeyID) {
				t.Fatal("the key in charge does not exist upstream")
			}
			if e.upstreamHas(old.KeyID) != tc.wantOldUpstream {
				t.Fatalf("old key upstream = %v, want %v", !tc.wantOldUpstream, tc.wantOldUpstream)
			}
			if n := len(e.climatiq.Keys()); n != tc.wantKeys {
				t.Fatalf("%d keys upstream, want %d", n, tc.wantKeys)
			}
			// Every upstream key is named by the role: none is left without a record.
			for _, k := range e.climatiq.Keys() {
				if !now.isOwnKey(k.Name) {
					t.Fatalf("upstream key %s is not recorded by the role", k.ID)
				}
			}
			// A create that failed without a clear answer may still land:
			// its entry is the rollback manager's to resolve.
			runRollbackManager(t, e)
			assertNoWAL(t, e)

			// Whatever failed is finished by the scheduler once due.
			if len(now.PreviousKeys) > 0 {
				if now.LastError != "" || !now.RetryAt.IsZero() {
					t.Fatalf("a failed delete of the replaced key was recorded as a rotation failure: %q", now.LastError)
				}
				if err := e.b.endOverlapOrRotate(context.Background(), e.storage, "app", now, now.PreviousKeys[0].deleteDue()); err != nil {
					t.Fatalf("due work: %v", err)
				}
				if e.upstreamHas(old.KeyID) || len(e.climatiq.Keys()) != 1 {
					t.Fatal("the replaced key was not deleted by the retry")
				}
			}
		})
	}
}

func TestStaticOverlap(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{
		"config": "cq", "project_id": e.projectID, "rotation_period": "1h", "overlap_period": "5m",
	})
	old := e.staticRole("app")
	e.mustOK(logical.UpdateOperation, "rotate-role/app", nil)
	role := e.staticRole("app")
	if len(role.PreviousKeys) != 1 || role.PreviousKeys[0].KeyID != old.KeyID || !e.upstreamHas(old.KeyID) {
		t.Fatal("the previous key did not survive into the overlap")
	}
	if creds := e.mustOK(logical.ReadOperation, "static-creds/app", nil); creds.Data["previous_key_id"] != old.KeyID {
		t.Fatalf("static-creds lacks previous_key_id during the overlap: %v", creds.Data)
	}
	overlapEnd := role.PreviousKeys[0].Expires
	if due := role.dueAt(); !due.Equal(overlapEnd) {
		t.Fatalf("role due at %s, want the overlap's end %s", due, overlapEnd)
	}

	// Before the overlap ends nothing happens; after, the old key goes.
	if err := e.b.endOverlapOrRotate(context.Background(), e.storage, "app", role, time.Now().Add(4*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if !e.upstreamHas(old.KeyID) {
		t.Fatal("old key deleted before the overlap ended")
	}
	if err := e.b.endOverlapOrRotate(context.Background(), e.storage, "app", role, overlapEnd.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if e.upstreamHas(old.KeyID) || len(e.staticRole("app").PreviousKeys) != 0 {
		t.Fatal("old key not deleted when the overlap ended")
	}
	if !e.upstreamHas(role.KeyID) {
		t.Fatal("current key lost")
	}
}

func TestRotationQueueRebuiltAfterRestart(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	for _, name := range []string{"soon", "later", "manual"} {
		data := map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": "1h"}
		if name == "manual" {
			data = map[string]any{"config": "cq", "project_id": e.projectID, "disable_automated_rotation": true}
		}
		e.mustOK(logical.CreateOperation, "static-roles/"+name, data)
	}
	// "soon" missed its rotation while Vault was down.
	soon := e.staticRole("soon")
	soon.NextRotation = time.Now().Add(-time.Minute)
	if err := putStaticRole(context.Background(), e.storage, "soon", soon); err != nil {
		t.Fatal(err)
	}

	// A new backend on the same storage, as after a restart.
	restarted := newBackend()
	restarted.scheduler.tick = 0 // drive the queue by hand
	if err := restarted.Setup(context.Background(), &logical.BackendConfig{
		StorageView: e.storage, System: logical.TestSystemView(), Logger: e.b.Logger(),
	}); err != nil {
		t.Fatal(err)
	}
	if err := restarted.initializeOnce(context.Background(), &logical.InitializationRequest{Storage: e.storage}); err != nil {
		t.Fatal(err)
	}
	defer restarted.clean(context.Background())
	if n := restarted.scheduler.queue.len(); n != 2 {
		t.Fatalf("queue holds %d roles, want 2 (the manual role has no schedule)", n)
	}
	later := e.staticRole("later").KeyID
	restarted.runDueRotations(e.storage)
	if n := restarted.scheduler.queue.len(); n != 2 {
		t.Fatalf("after the tick the queue holds %d roles, want 2", n)
	}
	if e.staticRole("later").KeyID != later {
		t.Fatal("a role that was not due was rotated")
	}
	if e.staticRole("soon").KeyID == soon.KeyID || e.upstreamHas(soon.KeyID) {
		t.Fatal("missed rotation did not run promptly after the restart")
	}
}

func TestSchedulerRotatesOnItsOwn(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	if err := e.b.initializeOnce(context.Background(), &logical.InitializationRequest{Storage: e.storage}); err != nil {
		t.Fatal(err)
	}
	e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": "5s"})
	first := e.staticRole("app").KeyID
	deadline := time.Now().Add(10 * time.Second)
	for e.staticRole("app").KeyID == first {
		if time.Now().After(deadline) {
			t.Fatal("no rotation within 10s of a 5s period")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if e.upstreamHas(first) {
		t.Fatal("old key not deleted after the scheduled rotation")
	}
	if msg := e.staticRole("app").LastError; msg != "" && !strings.Contains(msg, "none") {
		t.Fatalf("rotation recorded an error: %s", msg)
	}
}

// Adopting a released key again while a tidy runs: whichever of the
// adoption's writes a tidy falls between, it keeps the key. The tidy reads
// the inventory before the adoption starts and the release records and
// roles just after the release record is gone.
func TestAdoptingAReleasedKeyIsNeverTidiedAway(t *testing.T) {
	s := newHookStorage()
	e := newTestEnvWithStorage(t, s)
	clock := newFakeClock()
	e.b.clock = clock.Now
	e.writeClimatiqConfig("cq", nil)
	e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{
		"config": "cq", "project_id": e.projectID, "rotation_period": "1h", "delete_key_on_remove": false,
	})
	keyID := e.staticRole("app").KeyID
	e.mustOK(logical.DeleteOperation, "static-roles/app", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID}) // tidy scans the project
	clock.Advance(time.Hour)                                                     // the key is old enough for any min_age

	tidyWaits, adoptionUnreleased, tidyDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var once, unreleaseOnce sync.Once
	s.setHook(func(op, key string) error {
		switch {
		case op == "list" && key == releasedStoragePrefix:
			once.Do(func() {
				close(tidyWaits)
				select {
				case <-adoptionUnreleased:
				case <-time.After(5 * time.Second):
				}
			})
		case op == "delete" && strings.HasPrefix(key, releasedStoragePrefix):
			var err error
			unreleaseOnce.Do(func() {
				if err = s.Storage.Delete(context.Background(), key); err != nil {
					return
				}
				close(adoptionUnreleased)
				select {
				case <-tidyDone:
				case <-time.After(5 * time.Second):
				}
			})
			return err
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
	e.mustOK(logical.CreateOperation, "static-roles/again", map[string]any{
		"config": "cq", "project_id": e.projectID, "rotation_period": "1h", "key_id": keyID,
	})
	<-tidyDone
	s.setHook(nil)
	if !e.upstreamHas(keyID) {
		t.Fatal("a tidy during the adoption deleted the adopted key")
	}
	if e.staticRole("again").KeyID != keyID {
		t.Fatal("the role does not hold the adopted key")
	}
}

// A static role delete whose inventory clean-up fails still deletes the
// role; the record it leaves names a role that holds nothing, and neither
// keeps the released key from being adopted again nor stays listed.
func TestAKeyReleasedByAnInterruptedDeleteCanBeAdoptedAgain(t *testing.T) {
	s, e, keyID := newStaticRoleEnv(t, map[string]any{"delete_key_on_remove": false})
	s.setHook(failAlways("delete", keyListPrefix))
	e.mustOK(logical.DeleteOperation, "static-roles/app", nil)
	s.setHook(nil)

	e.mustOK(logical.CreateOperation, "static-roles/again", map[string]any{
		"config": "cq", "project_id": e.projectID, "rotation_period": "1h", "key_id": keyID,
	})
	if listed := e.listedKeys(); len(listed) != 1 || listed[keyID] != "again" {
		t.Fatalf("keys/ must list the key once, for its new role: %v", listed)
	}
}

// A failed scheduled rotation is retried with back-off; a longer period
// written meanwhile makes the rotation not due yet, and the retry goes
// with it (the error stays on show). A period under which it is still due
// keeps the retry.
func TestANewPeriodDropsARetryThatIsNoLongerDue(t *testing.T) {
	for _, tc := range []struct {
		period    string
		keepRetry bool
	}{
		{"24h", false},
		{"20m", true},
	} {
		t.Run(tc.period, func(t *testing.T) {
			e := newTestEnv(t)
			clock := newFakeClock()
			e.b.clock = clock.Now
			e.writeClimatiqConfig("cq", map[string]any{"max_retries": 0})
			e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{
				"config": "cq", "project_id": e.projectID, "rotation_period": "10m",
			})
			clock.Advance(30 * time.Minute)
			role := e.staticRole("app")
			e.climatiq.FailNextMethod(http.MethodPost, 1, http.StatusInternalServerError)
			err := e.b.endOverlapOrRotate(context.Background(), e.storage, "app", role, clock.Now())
			if err == nil {
				t.Fatal("scheduled rotation succeeded against a failing upstream")
			}
			e.b.recordRotationFailure(context.Background(), e.storage, "app", role, err, triggerSchedule)

			e.mustOK(logical.UpdateOperation, "static-roles/app", map[string]any{"rotation_period": tc.period})
			role = e.staticRole("app")
			if kept := !role.RetryAt.IsZero(); kept != tc.keepRetry {
				t.Fatalf("rotation_period=%s after a failed scheduled rotation: retry kept %v, want %v (retry_at %s, next %s)",
					tc.period, kept, tc.keepRetry, role.RetryAt, role.NextRotation)
			}
			if role.LastError == "" {
				t.Fatal("the failed rotation's error is no longer shown")
			}
			if due := role.dueAt(); !tc.keepRetry && due.Before(role.LastRotated.Add(24*time.Hour)) {
				t.Fatalf("due at %s, before the new period from the last rotation (%s)", due, role.LastRotated)
			}
		})
	}
}

// A role whose previous key's overlap has ended while its connection
// cannot be read: the delete backs off like a failed one. Before, the key
// stayed due, every finished attempt took the role again at once, and a
// tick never ended (the state machine's soak found it).
func TestAnEndedOverlapWithoutAConnectionBacksOff(t *testing.T) {
	s, e, previous := newStaticRoleEnv(t, map[string]any{"overlap_period": "10m"})
	e.mustOK(logical.UpdateOperation, "rotate-role/app", nil)
	e.reload() // no cached client: the tick must read the connection
	clock := e.schedulerByHand()
	clock.Advance(20 * time.Minute)
	s.setHook(failAlways("get", "config/"))

	done := make(chan struct{})
	go func() { defer close(done); e.b.runDueRotations(e.storage) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the scheduler tick did not end: the role is taken again and again")
	}
	s.setHook(nil)
	role := e.staticRole("app")
	if len(role.PreviousKeys) != 1 || role.PreviousKeys[0].KeyID != previous {
		t.Fatalf("previous keys %+v, want %s still listed", role.PreviousKeys, previous)
	}
	if pk := role.PreviousKeys[0]; !pk.DeleteRetryAt.After(clock.Now()) || pk.LastDeleteError == "" {
		t.Fatalf("the previous key's delete should back off with its error; got %+v", pk)
	}
}

// A scheduled role found past its rotation window whose move to the next
// scheduled time fails to store: nothing was tried, so nothing is retried.
// Before, the failed write was recorded as a failed rotation, and its
// retry rotated the key outside the window (the state machine found it).
func TestAMissedWindowThatFailsToStoreIsNotRetriedOutsideIt(t *testing.T) {
	s, e, held := newStaticRoleEnv(t, map[string]any{
		"rotation_period": 0, "rotation_schedule": "0 */3 * * *", "rotation_window": "1h",
	})
	clock := e.schedulerByHand()
	missed := e.staticRole("app").NextRotation
	clock.Advance(missed.Add(61 * time.Minute).Sub(clock.Now()))
	s.setHook(failOnce("put", staticRoleStoragePrefix))
	e.b.runDueRotations(e.storage)
	s.setHook(nil)
	// Until the slot after the missed one, every tick leaves the key.
	for next := missed.Add(3 * time.Hour); clock.Now().Before(next.Add(-rotationBackoffMax)); clock.Advance(rotationBackoffMax) {
		e.b.runDueRotations(e.storage)
		if role := e.staticRole("app"); role.KeyID != held {
			t.Fatalf("rotated at %s, outside the window of %s (next slot %s)", clock.Now().Format(time.RFC3339), missed.Format(time.RFC3339), next.Format(time.RFC3339))
		}
	}
	if role := e.staticRole("app"); !role.NextRotation.Equal(missed.Add(3*time.Hour)) || !role.RetryAt.IsZero() {
		t.Fatalf("next rotation %s, retry at %s; want the next slot %s and no retry", role.NextRotation, role.RetryAt, missed.Add(3*time.Hour))
	}
}

// The static-role paths asked for a dynamic role point at creds/ instead
// of telling the caller to create a static role of a name already taken;
// a name that is no role at all is told how to create one.
func TestStaticRolePathsPointADynamicRoleAtCreds(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	for _, tc := range []struct {
		op   logical.Operation
		path string
		want string
	}{
		{logical.ReadOperation, "static-creds/ci", "vault read creds/ci"},
		{logical.UpdateOperation, "rotate-role/ci", "vault read creds/ci"},
		{logical.ReadOperation, "static-creds/nope", "create it with a write to static-roles/nope"},
		{logical.UpdateOperation, "rotate-role/nope", "create it with a write to static-roles/nope"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			e.t = t
			e.mustFail(tc.op, tc.path, nil, "name: ")
			e.mustFail(tc.op, tc.path, nil, tc.want)
		})
	}
}

// TestAStaticRoleWhoseKeyIsGoneIsRotated: a static role pointing at a key
// that is gone upstream (restored from a snapshot taken before a rotation,
// or deleted in the dashboard) is rotated by the next start's check, or by
// the first static-creds read of an instance that has not seen its key,
// instead of serving the dead key until its next rotation.
func TestAStaticRoleWhoseKeyIsGoneIsRotated(t *testing.T) {
	tests := []struct {
		name         string
		healedByRead bool
		heal         func(t *testing.T, e *testEnv)
	}{
		{"at the next start", false, func(t *testing.T, e *testEnv) {
			e.reload()
			if err := e.b.initializeOnce(context.Background(), &logical.InitializationRequest{Storage: e.storage}); err != nil {
				t.Fatal(err)
			}
			select {
			case <-e.b.staticKeyChecks.ended():
			case <-time.After(10 * time.Second):
				t.Fatal("the start's check did not end")
			}
		}},
		{"at the first read of an instance", true, func(t *testing.T, e *testEnv) { e.reload() }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.writeClimatiqConfig("cq", nil)
			e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": "24h"})
			dead := e.staticRole("app").KeyID
			e.climatiq.RemoveKey(dead)
			tc.heal(t, e)
			if stored := e.staticRole("app").KeyID; (stored == dead) != tc.healedByRead {
				t.Fatalf("before the read the role holds %s (dead: %s); healed by the read: %v", stored, dead, tc.healedByRead)
			}
			served := e.mustOK(logical.ReadOperation, "static-creds/app", nil).Data
			if served["key_id"] == dead || !e.upstreamHas(served["key_id"].(string)) {
				t.Fatalf("static-creds serves key %v (dead: %s); want a new key that exists upstream", served["key_id"], dead)
			}
			if _, ok := e.climatiq.KeyByValue(served["api_key"].(string)); !ok {
				t.Fatal("the served api_key is not the new key's")
			}
		})
	}
}

func testAdoptingAnOwnedKeyIsRefused(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	leased := e.mustOK(logical.ReadOperation, "creds/ci", nil).Data["key_id"].(string)
	e.mustOK(logical.CreateOperation, "static-roles/first", map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": "1h"})
	static := e.staticRole("first").KeyID

	for name, keyID := range map[string]string{"leased key": leased, "static key": static} {
		t.Run(name, func(t *testing.T) {
			e.mustFail(logical.CreateOperation, "static-roles/second", map[string]any{
				"config": "cq", "project_id": e.projectID, "rotation_period": "1h", "key_id": keyID,
			}, "key_id")
		})
	}
	// An unknown project is the caller's mistake: a 400, not an upstream 5xx.
	e.mustFail(logical.CreateOperation, "static-roles/third", map[string]any{"config": "cq", "project_id": "prj_nope", "rotation_period": "1h"}, "project_id")
}

func TestRotationFieldsAreValidatedAgainstTheStoredRole(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.mustOK(logical.CreateOperation, "static-roles/sched", map[string]any{"config": "cq", "project_id": e.projectID, "rotation_schedule": "0 0 * * *"})
	e.mustOK(logical.CreateOperation, "static-roles/period", map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": "1h"})
	tests := []struct {
		name, path string
		data       map[string]any
		field      string // "" for success
	}{
		{"period onto a schedule", "static-roles/sched", map[string]any{"rotation_period": "2h"}, "rotation_period"},
		{"schedule onto a period", "static-roles/period", map[string]any{"rotation_schedule": "0 1 * * *"}, "rotation_schedule"},
		{"window alone on a schedule", "static-roles/sched", map[string]any{"rotation_window": "2h"}, ""},
		{"window on a period", "static-roles/period", map[string]any{"rotation_window": "2h"}, "rotation_window"},
		{"explicit switch to a period", "static-roles/sched", map[string]any{"rotation_period": "2h", "rotation_schedule": "", "rotation_window": 0}, ""},
		{"overlap longer than a short gap of an uneven schedule", "static-roles/period",
			map[string]any{"rotation_period": 0, "rotation_schedule": "0 0,1 * * *", "overlap_period": "2h"}, "overlap_period"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.field == "" {
				e.mustOK(logical.UpdateOperation, tc.path, tc.data)
				return
			}
			e.mustFail(logical.UpdateOperation, tc.path, tc.data, tc.field)
		})
	}
	if role := e.staticRole("sched"); role.RotationSchedule != "" || role.RotationPeriod != 2*time.Hour {
		t.Fatalf("explicit switch stored schedule %q period %s", role.RotationSchedule, role.RotationPeriod)
	}
}

func TestStaticCredsTTLCountsDownToTheRetry(t *testing.T) {
	e := newTestEnv(t)
	clock := newFakeClock()
	e.b.clock = clock.Now
	e.writeClimatiqConfig("cq", nil)
	e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": "1h"})
	clock.Advance(time.Hour + time.Second)
	role := e.staticRole("app")
	e.b.recordRotationFailure(context.Background(), e.storage, "app", role, errors.New("upstream down"), triggerSchedule)

	creds := e.mustOK(logical.ReadOperation, "static-creds/app", nil)
	want := int64(rotationBackoffMin.Seconds())
	if ttl := creds.Data["ttl"].(int64); ttl != want {
		t.Fatalf("ttl %d while a retry is %s away, want %d", ttl, rotationBackoffMin, want)
	}
}

// A static role must not adopt the key of a live lease: deleting the role
// (or rotating it) would delete the key under the lease.
func testAdoptingALeasedKeyIsRefused(t *testing.T) {
	e, _ := regressEnv(t)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	lease := e.mustOK(logical.ReadOperation, "creds/ci", nil)
	keyID := lease.Data["key_id"].(string)

	status, _, err := vaultStatusOf(e, logical.CreateOperation, "static-roles/app", map[string]any{
		"config": "cq", "project_id": e.projectID, "key_id": keyID, "rotation_period": 3600,
	})
	if status < 400 || status >= 500 {
		t.Fatalf("adopting the leased key %s: status %d (%v), want a 4xx", keyID, status, err)
	}
}

// Two static roles must not hold the same key.
func testAdoptingAnotherStaticRolesKeyIsRefused(t *testing.T) {
	e, _ := regressEnv(t)
	e.mustOK(logical.CreateOperation, "static-roles/first", map[string]any{
		"config": "cq", "project_id": e.projectID, "rotation_period": 3600,
	})
	keyID := e.mustOK(logical.ReadOperation, "static-roles/first", nil).Data["key_id"].(string)
	status, _, err := vaultStatusOf(e, logical.CreateOperation, "static-roles/second", map[string]any{
		"config": "cq", "project_id": e.projectID, "key_id": keyID, "rotation_period": 3600,
	})
	if status < 400 || status >= 500 {
		t.Fatalf("adopting static role first's key: status %d (%v), want a 4xx", status, err)
	}
}

// A static role on a project the connection cannot see is a 4xx naming
// project_id, not a 500 carrying the upstream's 404.
func TestStaticRoleOnAnUnknownProjectIs4xx(t *testing.T) {
	e, _ := regressEnv(t)
	status, _, err := vaultStatusOf(e, logical.CreateOperation, "static-roles/app", map[string]any{
		"config": "cq", "project_id": "prj_does_not_exist", "rotation_period": 3600,
	})
	if status < 400 || status >= 500 {
		t.Fatalf("static role on an unknown project: status %d (%v), want a 4xx", status, err)
	}
}

// TestAdoptingAKeyTheMountHoldsIsRefused: key_id adopts only a key nothing
// of the mount holds: not the role's own, not a lease's, not another static
// role's.
func TestAdoptingAKeyTheMountHoldsIsRefused(t *testing.T) {
	t.Run("a leased or static key", testAdoptingAnOwnedKeyIsRefused)
	t.Run("a live lease's, as Vault answers", testAdoptingALeasedKeyIsRefused)
	t.Run("another static role's, as Vault answers", testAdoptingAnotherStaticRolesKeyIsRefused)
}
