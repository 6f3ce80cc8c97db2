package carbon

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// TestEachStepOfALeaseIsOneStorageWrite counts the plugin's storage writes
// per step of a lease: an issuance writes its key's entry (its WAL block is
// written once for many issuances), a renewal writes nothing unless it
// moves the recorded expiry (then one entry), a revocation deletes one
// entry.
func TestEachStepOfALeaseIsOneStorageWrite(t *testing.T) {
	s := newHookStorage()
	e := newTestEnvWithStorage(t, s)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID, "ttl": "10m", "max_ttl": "1h"})
	e.writeRole("isolated", map[string]any{"config": "cq", "project_per_lease": true, "ttl": "10m", "max_ttl": "1h"})
	for _, role := range []string{"ci", "isolated"} {
		e.mustOK(logical.ReadOperation, "creds/"+role, nil) // opens the role's block
	}
	counter := &writeCounter{}
	s.setHook(counter.hook)

	steps := []struct {
		name string
		run  func(t *testing.T, lease *logical.Response)
		want int
	}{
		{name: "renewal within max_ttl", want: 0, run: func(t *testing.T, lease *logical.Response) {
			lease.Secret.IssueTime = time.Now()
			if _, err := e.renew(lease.Secret, 30*time.Minute); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "renewal after max_ttl was raised", want: 1, run: func(t *testing.T, lease *logical.Response) {
			e.mustOK(logical.UpdateOperation, "roles/"+lease.Secret.InternalData["role"].(string), map[string]any{"max_ttl": "5h"})
			counter.reset()
			lease.Secret.IssueTime = time.Now()
			if _, err := e.renew(lease.Secret, 4*time.Hour); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "second renewal to the same end", want: 0, run: func(t *testing.T, lease *logical.Response) {
			if _, err := e.renew(lease.Secret, 4*time.Hour); err != nil {
				t.Fatal(err)
			}
		}},
		// The moved expiry left a second entry; revocation removes both.
		{name: "revocation after a moved expiry", want: 2, run: func(t *testing.T, lease *logical.Response) {
			if _, err := e.revoke(lease.Secret); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "revocation", want: 1, run: func(t *testing.T, spent *logical.Response) {
			lease := e.mustOK(logical.ReadOperation, "creds/"+spent.Secret.InternalData["role"].(string), nil)
			counter.reset()
			if _, err := e.revoke(lease.Secret); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, role := range []string{"ci", "isolated"} {
		t.Run(role, func(t *testing.T) {
			counter.reset()
			lease := e.mustOK(logical.ReadOperation, "creds/"+role, nil)
			if got := counter.total(); got != 1 {
				t.Fatalf("issuance made %d storage writes (%v), want 1", got, counter.writes)
			}
			for _, step := range steps {
				counter.reset()
				step.run(t, lease)
				if got := counter.total(); got != step.want {
					t.Fatalf("%s made %d storage writes (%v), want %d", step.name, got, counter.writes, step.want)
				}
			}
		})
	}
}

// A renewal that moves the recorded expiry is one write, not a move of the
// listing entry in two: a failure or a stop in the middle cannot leave the
// key listed twice, nor with its old expiry for tidy to act on.
func TestRenewalPastTheOldExpiryKeepsTheKeyListedOnce(t *testing.T) {
	s := newHookStorage()
	e := newTestEnvWithStorage(t, s)
	clock := newFakeClock()
	e.b.clock = clock.Now
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID, "ttl": "30m", "max_ttl": "1h"})
	lease := e.mustOK(logical.ReadOperation, "creds/ci", nil)
	keyID := lease.Data["key_id"].(string)

	e.mustOK(logical.UpdateOperation, "roles/ci", map[string]any{"max_ttl": "10h"})
	// Any delete in the inventory fails: a renewal must not need one.
	s.setHook(failAlways("delete", keyListPrefix))
	lease.Secret.IssueTime = time.Now()
	if resp, err := e.renew(lease.Secret, 5*time.Hour); err != nil || resp.IsError() {
		t.Fatalf("renew: %v %v", resp, err)
	}
	s.setHook(nil)
	if ids := e.mustOK(logical.ListOperation, "keys/", nil).Data["keys"].([]string); len(ids) != 1 || ids[0] != keyID {
		t.Fatalf("keys/ = %v, want the key once", ids)
	}
	page := e.mustOK(logical.ListOperation, "keys/", map[string]any{"limit": 10})
	if ids := page.Data["keys"].([]string); len(ids) != 1 {
		t.Fatalf("keys/ page = %v, want the key once", ids)
	}
	if exp := page.Data["key_info"].(map[string]any)[keyID].(map[string]any)["expires"]; exp != formatTime(clock.Now().Add(5*time.Hour).UTC().Truncate(time.Second)) {
		t.Fatalf("listed expiry %v, want the renewed one", exp)
	}

	// Past the old expiry and its grace, tidy keeps the renewed key.
	clock.Advance(3 * time.Hour)
	e.mustOK(logical.UpdateOperation, "tidy", map[string]any{"min_age": "0s"})
	if !e.upstreamHas(keyID) {
		t.Fatal("tidy deleted the key of a lease renewed past its old expiry")
	}
	if _, err := e.revoke(lease.Secret); err != nil {
		t.Fatal(err)
	}
	if ids, _ := e.mustOK(logical.ListOperation, "keys/", nil).Data["keys"].([]string); len(ids) != 0 {
		t.Fatalf("keys/ after revocation = %v, want none (every entry of the key goes)", ids)
	}
}

// Counting the live keys between any two writes of a renewal that moves
// the recorded expiry counts the key once: a max_keys=1 role issues again
// after its one lease is revoked.
func TestCountsBuiltDuringARenewalCountEachKeyOnce(t *testing.T) {
	s := newHookStorage()
	e := newTestEnvWithStorage(t, s)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID, "max_ttl": "1h", "max_keys": 1})
	lease := e.mustOK(logical.ReadOperation, "creds/ci", nil)
	e.mustOK(logical.UpdateOperation, "roles/ci", map[string]any{"max_ttl": "10h"})

	// After each inventory write of the renewal, another node's change
	// makes this one count again.
	var counted []int
	s.setHook(func(op, key string) error {
		if (op != "put" && op != "delete") || !strings.HasPrefix(key, keyListPrefix) {
			return nil
		}
		var err error
		if op == "put" {
			err = s.Storage.Put(context.Background(), &logical.StorageEntry{Key: key})
		} else {
			err = s.Storage.Delete(context.Background(), key)
		}
		if err != nil {
			return err
		}
		e.b.resetLiveCounts()
		n, err := e.b.liveKeysOfConfig(context.Background(), s.Storage, "cq")
		counted = append(counted, n)
		return err
	})
	lease.Secret.IssueTime = time.Now()
	if _, err := e.renew(lease.Secret, 5*time.Hour); err != nil {
		t.Fatal(err)
	}
	s.setHook(nil)
	for i, n := range counted {
		if n != 1 {
			t.Fatalf("after the renewal's write %d, %d live keys counted, want 1", i+1, n)
		}
	}
	e.b.resetLiveCounts()
	if _, err := e.revoke(lease.Secret); err != nil {
		t.Fatal(err)
	}
	e.mustOK(logical.ReadOperation, "creds/ci", nil)
}

// Before initialize has moved the v0.1 inventory, revoking a v0.1 lease
// gives its max_keys place back.
func TestRevokingAV01LeaseGivesBackItsMaxKeysPlace(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID, "max_keys": 1})
	lease := e.mustOK(logical.ReadOperation, "creds/ci", nil)
	// The lease as v0.1 recorded it.
	k, _ := getKey(context.Background(), e.storage, lease.Data["key_id"].(string))
	if err := e.b.forgetKey(context.Background(), e.storage, k); err != nil {
		t.Fatal(err)
	}
	if err := putEntry(context.Background(), e.storage, legacyInventoryPath(keyKindDynamic, "ci", k.KeyName), k); err != nil {
		t.Fatal(err)
	}
	e.b.resetLiveCounts()
	e.mustFail(logical.ReadOperation, "creds/ci", nil, "max_keys")
	if _, err := e.revoke(lease.Secret); err != nil {
		t.Fatal(err)
	}
	e.mustOK(logical.ReadOperation, "creds/ci", nil)
}

// After an upgrade from format 3, initialize deletes format 3's copies of
// the records (key/<id>) in the background and leaves the listing entries,
// which are the records now.
func TestInitializeDeletesFormat3RecordCopies(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	lease := e.mustOK(logical.ReadOperation, "creds/ci", nil)
	keyID := lease.Data["key_id"].(string)
	k, _ := getKey(context.Background(), e.storage, keyID)
	if err := putEntry(context.Background(), e.storage, format3RecordPrefix+keyID, k); err != nil {
		t.Fatal(err)
	}
	e.b.scheduler.tick = 0
	if err := e.b.Initialize(context.Background(), &logical.InitializationRequest{Storage: e.storage}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		left, err := e.storage.List(context.Background(), format3RecordPrefix)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("format 3 records left: %v", left)
		}
	}
	if got, _ := getKey(context.Background(), e.storage, keyID); got == nil {
		t.Fatal("the key's record went with its format 3 copy")
	}
}
