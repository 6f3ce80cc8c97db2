package carbon

import (
	"context"
	"errors"
	"strings"
	"testing"

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

	s.failPutPrefix = keyRecordPrefix
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
