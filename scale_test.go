package carbon

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// countingStorage counts storage calls, as a Vault round trip each for an
// external plugin. WAL calls are left out: one issuance makes the same WAL
// calls whatever the inventory holds, and the spent entry is deleted off
// the request path, at a moment a count cannot pin down.
type countingStorage struct {
	logical.Storage
	mu    sync.Mutex
	calls int
}

func (s *countingStorage) count(key string) {
	if strings.HasPrefix(key, "wal/") {
		return
	}
	s.mu.Lock()
	s.calls++
	s.mu.Unlock()
}

func (s *countingStorage) Get(ctx context.Context, k string) (*logical.StorageEntry, error) {
	s.count(k)
	return s.Storage.Get(ctx, k)
}

func (s *countingStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	s.count(e.Key)
	return s.Storage.Put(ctx, e)
}

func (s *countingStorage) Delete(ctx context.Context, k string) error {
	s.count(k)
	return s.Storage.Delete(ctx, k)
}

func (s *countingStorage) List(ctx context.Context, prefix string) ([]string, error) {
	s.count(prefix)
	return s.Storage.List(ctx, prefix)
}

func (s *countingStorage) callsDuring(f func()) int {
	s.mu.Lock()
	before := s.calls
	s.mu.Unlock()
	f()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls - before
}

// TestOperationCostsDoNotGrowWithKeys runs each operation on a mount with a
// few keys and on one with many, and requires the same number of storage
// calls: issuance (with max_keys), a key read by id, the live-key check of
// a config delete, a page of LIST keys/, and revocation.
func TestOperationCostsDoNotGrowWithKeys(t *testing.T) {
	measure := func(filled int) map[string]int {
		s := &countingStorage{Storage: &logical.InmemStorage{}}
		e := newTestEnvWithStorage(t, s)
		e.b.scheduler.tick = 0
		if err := e.b.initializeOnce(context.Background(), &logical.InitializationRequest{Storage: s}); err != nil {
			t.Fatal(err)
		}
		e.writeClimatiqConfig("cq", nil)
		e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID, "max_keys": 100_000})
		for i := range filled {
			k := &ownedKey{Kind: keyKindDynamic, Config: "cq", Role: "ci", ProjectID: e.projectID,
				KeyID: fmt.Sprintf("key_fill%06d", i), KeyName: fmt.Sprintf("vault-abcdefgh-1795000000-%06d-ci", i),
				Created: time.Now(), Expires: time.Now().Add(time.Hour)}
			if err := e.b.recordKey(context.Background(), s, k, nil); err != nil {
				t.Fatal(err)
			}
		}
		// The first issuance counts the inventory once per plugin instance.
		e.mustOK(logical.ReadOperation, "creds/ci", nil)

		costs := map[string]int{}
		var issued *logical.Response
		costs["issue with max_keys"] = s.callsDuring(func() { issued = e.mustOK(logical.ReadOperation, "creds/ci", nil) })
		keyID := issued.Data["key_id"].(string)
		costs["read keys/:key_id"] = s.callsDuring(func() { e.mustOK(logical.ReadOperation, "keys/"+keyID, nil) })
		costs["list page of 10"] = s.callsDuring(func() {
			page := e.mustOK(logical.ListOperation, "keys/", map[string]any{"limit": 10})
			if n := len(page.Data["keys"].([]string)); n != 10 {
				t.Fatalf("page of %d keys, want 10", n)
			}
		})
		e.mustOK(logical.DeleteOperation, "roles/ci", nil)
		costs["config delete check"] = s.callsDuring(func() { e.mustFail(logical.DeleteOperation, "config/cq", nil, "live keys") })
		costs["revoke"] = s.callsDuring(func() {
			if _, err := e.revoke(issued.Secret); err != nil {
				t.Fatal(err)
			}
		})
		return costs
	}
	few, many := measure(20), measure(3000)
	for op, n := range few {
		// A page may span one more bucket on the smaller mount.
		if many[op] > n {
			t.Errorf("%s: %d storage calls with 3000 keys, %d with 20: the cost grows with the inventory", op, many[op], n)
		}
		t.Logf("%s: %d storage calls with 20 keys, %d with 3000", op, n, many[op])
	}
}

// TestMaxKeysExactUnderConcurrency: 64 issuers against max_keys=10 never get
// an 11th key.
func TestMaxKeysExactUnderConcurrency(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID, "max_keys": 10})
	var wg sync.WaitGroup
	var mu sync.Mutex
	issued := 0
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := e.doErr(logical.ReadOperation, "creds/ci", nil)
			if err == nil && !resp.IsError() {
				mu.Lock()
				issued++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if issued != 10 || len(e.climatiq.Keys()) != 10 {
		t.Fatalf("%d issued, %d upstream; want exactly max_keys=10", issued, len(e.climatiq.Keys()))
	}
}

// TestMaxKeysExactWhenIssuancesFail: issuances that fail upstream give
// their place back, and 64 issuers against a flaky upstream still never get
// more than max_keys keys.
func TestMaxKeysExactWhenIssuancesFail(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", map[string]any{"max_retries": 0})
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID, "max_keys": 1})

	e.climatiq.FailNextMethod(http.MethodPost, 1, http.StatusServiceUnavailable)
	if _, err := e.doErr(logical.ReadOperation, "creds/ci", nil); err == nil {
		t.Fatal("the injected failure did not fail the issuance")
	}
	e.mustOK(logical.ReadOperation, "creds/ci", nil) // the failed issuance's place is free again
	e.mustFail(logical.ReadOperation, "creds/ci", nil, "max_keys")

	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID, "max_keys": 10})
	e.climatiq.SetFailureRate(0.3)
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = e.doErr(logical.ReadOperation, "creds/ci", nil) }()
	}
	wg.Wait()
	e.climatiq.SetFailureRate(0)
	for range 20 { // fill what the failures left free
		_, _ = e.doErr(logical.ReadOperation, "creds/ci", nil)
	}
	runRollbackManager(t, e)
	if n := len(e.climatiq.Keys()); n != 10 {
		t.Fatalf("%d keys upstream, want exactly max_keys=10", n)
	}
}

// TestCappedIssuanceRunsConcurrently: max_keys does not serialise a role's
// issuances, so a slow upstream is waited on once, not once per request.
func TestCappedIssuanceRunsConcurrently(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID, "max_keys": 100})
	const latency, issuers = 400 * time.Millisecond, 6
	e.climatiq.SetLatency(latency)
	defer e.climatiq.SetLatency(0)
	var wg sync.WaitGroup
	start := time.Now()
	for range issuers {
		wg.Add(1)
		go func() { defer wg.Done(); e.mustOK(logical.ReadOperation, "creds/ci", nil) }()
	}
	wg.Wait()
	// Serialised, the six creates alone take 6 × 400 ms.
	if took := time.Since(start); took >= issuers*latency/2 {
		t.Fatalf("%d capped issuances against a %s upstream took %s: they ran one after another", issuers, latency, took)
	}
}

// TestKeysListPagesCoverEveryKeyOnce walks LIST keys/ a page at a time.
func TestKeysListPagesCoverEveryKeyOnce(t *testing.T) {
	e := newTestEnv(t)
	for i := range 537 {
		k := &ownedKey{Kind: keyKindDynamic, Config: "cq", Role: "ci", KeyID: fmt.Sprintf("key_%d", i), KeyName: fmt.Sprintf("n%d", i)}
		if err := e.b.recordKey(context.Background(), e.storage, k, nil); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	after := ""
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatal("paging does not end")
		}
		resp := e.mustOK(logical.ListOperation, "keys/", map[string]any{"limit": 50, "after": after})
		keys, _ := resp.Data["keys"].([]string)
		if len(keys) == 0 {
			break
		}
		for _, id := range keys {
			if seen[id] {
				t.Fatalf("key %s listed twice", id)
			}
			seen[id] = true
			if resp.Data["key_info"].(map[string]any)[id] == nil {
				t.Fatalf("no key_info for %s", id)
			}
		}
		after = keys[len(keys)-1]
	}
	if len(seen) != 537 {
		t.Fatalf("pages listed %d keys, want 537", len(seen))
	}
}

// TestLegacyInventoryMovedInPlace: a mount written by v0.1 (inventory at
// inventory/<kind>/<role>/<name>) keeps working before the move, and the
// move at initialize leaves every key tracked once, in the new layout.
func TestLegacyInventoryMovedInPlace(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID, "max_keys": 3})
	// Two leases as v0.1 recorded them.
	var leases []*logical.Response
	for range 2 {
		resp := e.mustOK(logical.ReadOperation, "creds/ci", nil)
		k, _ := getKey(context.Background(), e.storage, resp.Data["key_id"].(string))
		if err := e.b.forgetKey(context.Background(), e.storage, k); err != nil {
			t.Fatal(err)
		}
		if err := putEntry(context.Background(), e.storage, legacyInventoryPath(keyKindDynamic, "ci", k.KeyName), k); err != nil {
			t.Fatal(err)
		}
		leases = append(leases, resp)
	}
	restarted := newBackend()
	restarted.scheduler.tick = 0
	if err := restarted.Setup(context.Background(), &logical.BackendConfig{StorageView: e.storage, System: logical.TestSystemView(), Logger: testLogger()}); err != nil {
		t.Fatal(err)
	}
	e.b.clean(context.Background())
	e.b = restarted
	defer restarted.clean(context.Background())

	// Before the move: listed, counted against max_keys, renewable.
	if list := e.mustOK(logical.ListOperation, "keys/", nil); len(list.Data["keys"].([]string)) != 2 {
		t.Fatalf("legacy keys not listed: %v", list.Data["keys"])
	}
	e.mustOK(logical.ReadOperation, "creds/ci", nil)
	e.mustFail(logical.ReadOperation, "creds/ci", nil, "max_keys")
	leases[0].Secret.IssueTime = time.Now()
	if _, err := e.renew(leases[0].Secret, time.Hour); err != nil {
		t.Fatal(err)
	}

	if err := restarted.initializeOnce(context.Background(), &logical.InitializationRequest{Storage: e.storage}); err != nil {
		t.Fatal(err)
	}
	if left, _ := e.storage.List(context.Background(), legacyInventoryPrefix); len(left) != 1 || left[0] != legacyTombstoneKind {
		t.Fatalf("legacy entries left after the move: %v, want only the tombstone", left)
	}
	if list := e.mustOK(logical.ListOperation, "keys/", nil); len(list.Data["keys"].([]string)) != 3 {
		t.Fatalf("%d keys listed after the move, want 3", len(list.Data["keys"].([]string)))
	}
	for _, l := range leases {
		if _, err := e.revoke(l.Secret); err != nil {
			t.Fatal(err)
		}
		if e.upstreamHas(l.Data["key_id"].(string)) {
			t.Fatal("a moved lease's key survived its revocation")
		}
	}
	if n, _ := countInventory(context.Background(), e.storage, keyKindDynamic, "ci"); n != 1 {
		t.Fatalf("%d entries left, want the one issued after the restart", n)
	}
}
