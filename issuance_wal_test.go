package carbon

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// A reload during a burst of project_per_lease issuance, then tidy: the old
// instance's issuances finish after the new instance started, and its WAL
// entries may be left behind (Clean, or a failed background delete). Every
// live lease keeps its project and key; revoking them all and one tidy
// leaves no marked project.
func TestReloadDuringPerLeaseIssuanceKeepsLiveProjects(t *testing.T) {
	for _, tc := range []struct {
		name string
		hook func(op, key string) error
	}{
		{name: "WAL entries retired normally"},
		{name: "retiring WAL entries fails", hook: failAlways("delete", "wal/")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newHookStorage()
			e := newTestEnvWithStorage(t, s)
			e.writeClimatiqConfig("cq", nil)
			e.writeRole("isolated", map[string]any{"config": "cq", "project_per_lease": true})
			projects := len(e.climatiq.Projects())
			s.setHook(tc.hook)
			e.climatiq.SetLatency(30 * time.Millisecond)

			old := e.b
			var leases []*logical.Response
			var mu sync.Mutex
			var wg sync.WaitGroup
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, err := old.HandleRequest(context.Background(), &logical.Request{Operation: logical.ReadOperation, Path: "creds/isolated", Storage: e.storage})
					if err != nil || resp.IsError() {
						t.Errorf("issuance: %v %v", resp, err)
						return
					}
					mu.Lock()
					leases = append(leases, resp)
					mu.Unlock()
				}()
			}
			time.Sleep(10 * time.Millisecond)
			e.reload()
			old.clean(context.Background())
			wg.Wait()
			e.climatiq.SetLatency(0)
			s.setHook(nil)

			e.mustOK(logical.UpdateOperation, "tidy", map[string]any{"min_age": "0s"})
			runRollbackManager(t, e)
			for _, l := range leases {
				if !e.upstreamHas(l.Data["key_id"].(string)) {
					t.Fatalf("the key (and project %v) of a live lease was deleted", l.Data["project_id"])
				}
			}
			for _, l := range leases {
				if _, err := e.revoke(l.Secret); err != nil {
					t.Fatal(err)
				}
			}
			e.mustOK(logical.UpdateOperation, "tidy", map[string]any{"min_age": "0s"})
			if n := len(e.climatiq.Projects()); n != projects {
				t.Fatalf("%d projects upstream after revoking every lease and tidy, want %d", n, projects)
			}
		})
	}
}

// A per-lease issuance's spent WAL entry (format 3: written before the
// create, so without the key's id) that outlived its issuance: the rollback
// finds the project by name, sees its key recorded and keeps both.
func TestSpentPerLeaseWALEntryKeepsTheProject(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("isolated", map[string]any{"config": "cq", "project_per_lease": true})
	lease := e.mustOK(logical.ReadOperation, "creds/isolated", nil)
	waitSpentWALRetired(t, e)
	spent := &ownedKey{Kind: keyKindDynamic, Config: "cq", Role: "isolated", ProjectPerLease: true, KeyName: lease.Data["key_name"].(string)}
	if _, err := framework.PutWAL(context.Background(), e.storage, walKindClimatiqKey, spent); err != nil {
		t.Fatal(err)
	}
	runRollbackManager(t, e)
	assertNoWAL(t, e)
	if !e.upstreamHas(lease.Data["key_id"].(string)) {
		t.Fatal("rolling back a spent per-lease entry deleted the live lease's project")
	}
}

// A block's rollback deletes exactly the keys created under it that the
// mount does not hold, and nothing else in the project.
func TestIssuanceBlockRollbackDeletesOnlyWhatNobodyHolds(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	held := e.mustOK(logical.ReadOperation, "creds/ci", nil).Data["key_id"].(string)
	blk := e.b.blocks.open[blockScope{config: "cq", project: e.projectID}]
	// A create whose answer was lost under the same block, and keys of
	// other origins in the same project.
	strandedName := blk.entry.NoncePrefix
	issuance, err := e.b.takeIssuanceName(context.Background(), e.storage, blk.scope(), blk.entry.Marker, "x")
	if err != nil {
		t.Fatal(err)
	}
	stranded := e.climatiq.AddKey(e.projectID, issuance.name).ID
	e.b.finishIssuance(context.Background(), issuance, false)
	foreign := e.climatiq.AddKey(e.projectID, "hand-made-"+strandedName).ID
	otherBlock := e.climatiq.AddKey(e.projectID, "vault-"+blk.entry.Marker+"-1700000000-zzz000-x").ID

	runRollbackManager(t, e)
	for id, want := range map[string]bool{held: true, stranded: false, foreign: true, otherBlock: true} {
		if got := e.upstreamHas(id); got != want {
			t.Errorf("key %s upstream = %v, want %v", id, got, want)
		}
	}
	assertNoWAL(t, e)
}
