package carbon

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// failingStorage fails Put for keys with a given prefix, to stop issuance at
// a chosen step.
type failingStorage struct {
	logical.Storage
	failPutPrefix string
}

func (s *failingStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	if s.failPutPrefix != "" && strings.HasPrefix(e.Key, s.failPutPrefix) {
		return errors.New("injected storage failure")
	}
	return s.Storage.Put(ctx, e)
}

func TestIssuanceWritesWALBeforeCreate(t *testing.T) {
	s := &failingStorage{Storage: &logical.InmemStorage{}}
	e := newTestEnvWithStorage(t, s)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})

	// With the WAL unwritable, nothing may happen upstream.
	s.failPutPrefix = "wal/"
	if _, err := e.doErr(logical.ReadOperation, "creds/ci", nil); err == nil {
		t.Fatal("issuance succeeded without a WAL entry")
	}
	if st := e.climatiq.Stats(); st.KeysCreated != 0 {
		t.Fatalf("%d keys created upstream without a WAL entry", st.KeysCreated)
	}
}

func TestIssuanceRollsBackWhenInventoryWriteFails(t *testing.T) {
	s := &failingStorage{Storage: &logical.InmemStorage{}}
	e := newTestEnvWithStorage(t, s)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	e.writeRole("isolated", map[string]any{"config": "cq", "project_per_lease": true})
	projects := len(e.climatiq.Projects())

	s.failPutPrefix = keyListPrefix
	for _, role := range []string{"ci", "isolated"} {
		if _, err := e.doErr(logical.ReadOperation, "creds/"+role, nil); err == nil {
			t.Fatalf("%s: issuance succeeded without an inventory entry", role)
		}
	}
	st := e.climatiq.Stats()
	if st.KeysCreated != 2 || len(e.climatiq.Keys()) != 0 || len(e.climatiq.Projects()) != projects {
		t.Fatalf("created %d keys, %d left upstream, %d projects (want 2, 0, %d)", st.KeysCreated, len(e.climatiq.Keys()), len(e.climatiq.Projects()), projects)
	}
	assertNoWAL(t, e)
}

func TestWALRollback(t *testing.T) {
	tests := []struct {
		name string
		// setup creates upstream state as a crash would leave it and
		// returns the WAL entry covering it.
		setup       func(e *testEnv) *ownedKey
		wantKeys    int
		wantProject bool
	}{
		{
			name: "key id lost: found by name and deleted",
			setup: func(e *testEnv) *ownedKey {
				e.climatiq.AddKey(e.projectID, "vault-abcdefgh-1700000000-nonce1-ci")
				return &ownedKey{Config: "cq", Role: "ci", ProjectID: e.projectID, KeyName: "vault-abcdefgh-1700000000-nonce1-ci"}
			},
		},
		{
			name: "key id known: deleted",
			setup: func(e *testEnv) *ownedKey {
				k := e.climatiq.AddKey(e.projectID, "vault-abcdefgh-1700000000-nonce2-ci")
				return &ownedKey{Config: "cq", Role: "ci", ProjectID: e.projectID, KeyName: k.Name, KeyID: k.ID}
			},
		},
		{
			name: "create never happened: nothing to do",
			setup: func(e *testEnv) *ownedKey {
				return &ownedKey{Config: "cq", Role: "ci", ProjectID: e.projectID, KeyName: "vault-abcdefgh-1700000000-nonce3-ci"}
			},
		},
		{
			name: "tracked key is kept",
			setup: func(e *testEnv) *ownedKey {
				k := e.climatiq.AddKey(e.projectID, "vault-abcdefgh-1700000000-nonce4-ci")
				if err := e.b.recordKey(context.Background(), e.storage, &ownedKey{KeyID: k.ID, KeyName: k.Name, Role: "ci", Kind: keyKindDynamic, Config: "cq"}, nil); err != nil {
					e.t.Fatal(err)
				}
				return &ownedKey{Config: "cq", Role: "ci", ProjectID: e.projectID, KeyName: k.Name}
			},
			wantKeys: 1,
		},
		{
			name: "per-lease project found by name and deleted",
			setup: func(e *testEnv) *ownedKey {
				p := e.climatiq.AddProject("vault-abcdefgh-1700000000-nonce5-x")
				e.climatiq.AddKey(p.ID, p.Name)
				return &ownedKey{Config: "cq", Role: "x", ProjectPerLease: true, KeyName: p.Name}
			},
		},
		{
			name: "per-lease project without key deleted",
			setup: func(e *testEnv) *ownedKey {
				p := e.climatiq.AddProject("vault-abcdefgh-1700000000-nonce6-x")
				return &ownedKey{Config: "cq", Role: "x", ProjectPerLease: true, KeyName: p.Name}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.writeClimatiqConfig("cq", nil)
			w := tc.setup(e)
			if _, err := framework.PutWAL(context.Background(), e.storage, walKindClimatiqKey, w); err != nil {
				t.Fatal(err)
			}
			// Run the rollback as Vault's rollback manager does, with the
			// entry decoded from storage.
			ids, _ := framework.ListWAL(context.Background(), e.storage)
			entry, err := framework.GetWAL(context.Background(), e.storage, ids[0])
			if err != nil {
				t.Fatal(err)
			}
			if err := e.b.walRollback(context.Background(), &logical.Request{Storage: e.storage}, entry.Kind, entry.Data); err != nil {
				t.Fatalf("rollback: %v", err)
			}
			if n := len(e.climatiq.Keys()); n != tc.wantKeys {
				t.Fatalf("%d keys upstream after rollback, want %d", n, tc.wantKeys)
			}
			for _, p := range e.climatiq.Projects() {
				if p.Name == w.KeyName {
					t.Fatal("per-lease project survived the rollback")
				}
			}
		})
	}
}

func TestWALRollbackRunsFromRollbackManager(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	k := e.climatiq.AddKey(e.projectID, "vault-abcdefgh-1700000000-nonce7-ci")
	if _, err := framework.PutWAL(context.Background(), e.storage, walKindClimatiqKey,
		&ownedKey{Config: "cq", Role: "ci", ProjectID: e.projectID, KeyName: k.Name}); err != nil {
		t.Fatal(err)
	}
	runRollbackManager(t, e)
	if _, ok := e.climatiq.Key(k.ID); ok {
		t.Fatal("rollback manager did not delete the stranded key")
	}
	assertNoWAL(t, e)
}

// A rotation whose WAL entry could not be deleted (only logged), then the
// role removed with delete_key_on_remove=false: the rollback of that entry
// keeps the released key.
func TestRollbackKeepsAReleasedKey(t *testing.T) {
	s := newHookStorage()
	e := newTestEnvWithStorage(t, s)
	e.writeClimatiqConfig("cq", nil)
	e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{
		"config": "cq", "project_id": e.projectID, "rotation_period": "1h", "delete_key_on_remove": false,
	})
	s.setHook(failAlways("delete", "wal/"))
	e.mustOK(logical.UpdateOperation, "rotate-role/app", nil)
	s.setHook(nil)
	released := e.staticRole("app").KeyID
	e.mustOK(logical.DeleteOperation, "static-roles/app", nil)

	runRollbackManager(t, e)
	if !e.upstreamHas(released) {
		t.Fatal("the rollback of a rotation deleted the key released to the operator")
	}
	e.mustOK(logical.UpdateOperation, "tidy", map[string]any{"min_age": "0s"})
	if !e.upstreamHas(released) {
		t.Fatal("tidy deleted the released key")
	}
}

// A failed inventory write during a rotation or an issuance counts
// nothing and leaves nothing: the live counts stay exact (a connection with
// a live lease can still not be deleted) and no key stays upstream or in
// keys/.
func TestFailedInventoryWriteCountsAndLeavesNothing(t *testing.T) {
	s := newHookStorage()
	e := newTestEnvWithStorage(t, s)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": "1h"})
	lease := e.mustOK(logical.ReadOperation, "creds/ci", nil)
	live := func() int {
		n, err := e.b.liveKeysOfConfig(context.Background(), e.storage, "cq")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := live(); n != 2 {
		t.Fatalf("%d live keys, want 2 (a lease and a static key)", n)
	}
	upstream := len(e.climatiq.Keys())

	for _, step := range []struct {
		op   string
		req  logical.Operation
		path string
	}{{"rotate", logical.UpdateOperation, "rotate-role/app"}, {"issue", logical.ReadOperation, "creds/ci"}} {
		s.setHook(failOnce("put", keyListPrefix))
		if resp, err := e.doErr(step.req, step.path, nil); err == nil && !resp.IsError() {
			t.Fatalf("%s succeeded without its inventory entry", step.op)
		}
		s.setHook(nil)
		if n := live(); n != 2 {
			t.Fatalf("after a failed %s: %d live keys counted, want 2", step.op, n)
		}
		e.b.resetLiveCounts()
		if n := live(); n != 2 {
			t.Fatalf("after a failed %s: %d live keys recorded, want 2", step.op, n)
		}
		if n := len(e.climatiq.Keys()); n != upstream {
			t.Fatalf("after a failed %s: %d keys upstream, want %d", step.op, n, upstream)
		}
		if ids := e.mustOK(logical.ListOperation, "keys/", nil).Data["keys"].([]string); len(ids) != 2 {
			t.Fatalf("after a failed %s: keys/ = %v, want the lease's and the static role's", step.op, ids)
		}
	}
	assertNoWAL(t, e)
	e.mustOK(logical.DeleteOperation, "static-roles/app", nil)
	e.mustOK(logical.DeleteOperation, "roles/ci", nil)
	e.mustFail(logical.DeleteOperation, "config/cq", nil, "name")
	if _, err := e.revoke(lease.Secret); err != nil {
		t.Fatal(err)
	}
	e.mustOK(logical.DeleteOperation, "config/cq", nil)
}

// A create whose answer timed out may land upstream after the request's own
// rollback looked and found nothing: its WAL entry stays, and the rollback
// manager deletes the key that landed. Found by the state machine (an
// abandoned create on a static role's first key).
func TestCreateThatLandsAfterItsRollbackLookedIsStillRolledBack(t *testing.T) {
	for _, tc := range []struct {
		name string
		op   logical.Operation
		path string
	}{
		{"rotation", logical.UpdateOperation, "rotate-role/app"},
		{"issuance", logical.ReadOperation, "creds/ci"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.writeClimatiqConfig("cq", map[string]any{"request_timeout": "1s", "max_retries": 0})
			e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
			e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": "1h"})
			before := len(e.climatiq.Keys())
			// The create hangs past the request timeout and commits later;
			// the request's own rollback, once the create timed out, gets
			// quick answers and finds nothing yet.
			e.climatiq.SetLatency(2 * time.Second)
			e.climatiq.SetCompleteAbandoned(true)
			time.AfterFunc(500*time.Millisecond, func() { e.climatiq.SetLatency(0) })
			if resp, err := e.doErr(tc.op, tc.path, nil); err == nil && !resp.IsError() {
				t.Fatal("the request succeeded against an upstream slower than its timeout")
			}
			for deadline := time.Now().Add(5 * time.Second); len(e.climatiq.Keys()) == before; time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the abandoned create never landed")
				}
			}
			runRollbackManager(t, e)
			if n := len(e.climatiq.Keys()); n != before {
				t.Fatalf("%d keys stranded upstream after the rollback manager ran", n-before)
			}
		})
	}
}

// A rotation whose WAL entry outlives it (its retirement failed), of a
// role then deleted with delete_key_on_remove=false, whose new key another
// role then adopted: the rollback finds the WAL's role gone, and must
// still see that the key is held, by the role that adopted it.
func TestRollbackOfARotationKeepsAKeyAdoptedAfterItsRelease(t *testing.T) {
	s, e, _ := newStaticRoleEnv(t, map[string]any{"delete_key_on_remove": false})
	s.setHook(failAlways("delete", "wal/"))
	e.mustOK(logical.UpdateOperation, "rotate-role/app", nil)
	rotated := e.staticRole("app").KeyID
	e.mustOK(logical.DeleteOperation, "static-roles/app", nil)
	s.setHook(nil)
	e.mustOK(logical.CreateOperation, "static-roles/again", map[string]any{
		"config": "cq", "project_id": e.projectID, "rotation_period": "1h", "key_id": rotated,
	})
	if ids, _ := e.storage.List(context.Background(), "wal/"); len(ids) == 0 {
		t.Fatal("the rotation's WAL entry should have outlived it")
	}

	runRollbackManager(t, e)
	if !e.upstreamHas(rotated) {
		t.Fatalf("the rollback deleted key %s, which static role again adopted", rotated)
	}
	if got := e.staticRole("again").KeyID; got != rotated {
		t.Fatalf("static role again holds %q, want %s", got, rotated)
	}
}

// A plugin that stops between recording a key and deleting the issuance's
// WAL entry leaves a spent entry without the key's id. The rollback manager
// finds the key by its unique name, sees it recorded, keeps it and drops the
// entry, with one listing call upstream.
func TestSpentWALEntryLeftByAStopKeepsTheKey(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	resp := e.mustOK(logical.ReadOperation, "creds/ci", nil)
	keyID, keyName := resp.Data["key_id"].(string), resp.Data["key_name"].(string)
	waitSpentWALRetired(t, e)

	// The entry exactly as issuance writes it before the create.
	left := &ownedKey{Kind: keyKindDynamic, Config: "cq", Role: "ci", ProjectID: e.projectID, KeyName: keyName}
	if _, err := framework.PutWAL(context.Background(), e.storage, walKindClimatiqKey, left); err != nil {
		t.Fatal(err)
	}
	requests := e.climatiq.Stats().Requests
	runRollbackManager(t, e)
	assertNoWAL(t, e)
	if !e.upstreamHas(keyID) {
		t.Fatal("the rollback manager deleted a key its lease still holds")
	}
	assertInventory(t, e, "ci", keyName, true)
	if got := e.climatiq.Stats().Requests - requests; got != 1 {
		t.Fatalf("dropping the spent entry took %d upstream requests, want 1 listing", got)
	}
}
