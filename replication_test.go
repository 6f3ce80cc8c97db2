package carbon

import (
	"context"
	"errors"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/helper/logging"
	"github.com/hashicorp/vault/sdk/logical"
)

// clusterStorage is one cluster's view of a mount under performance
// replication: the local prefixes go to the cluster's own storage,
// everything else to the replicated storage, which a performance
// secondary may only read (Vault answers its writes there with
// ErrReadOnly, as this does).
type clusterStorage struct {
	local, replicated logical.Storage
	secondary         bool
	refusedWrites     int // writes of replicated storage a secondary attempted
}

func isLocalStorage(key string) bool {
	for _, p := range localStoragePrefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

func (c *clusterStorage) pick(key string) logical.Storage {
	if isLocalStorage(key) {
		return c.local
	}
	return c.replicated
}

func (c *clusterStorage) List(ctx context.Context, prefix string) ([]string, error) {
	return c.pick(prefix).List(ctx, prefix)
}

func (c *clusterStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	return c.pick(key).Get(ctx, key)
}

func (c *clusterStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	if c.secondary && !isLocalStorage(e.Key) {
		c.refusedWrites++
		return logical.ErrReadOnly
	}
	return c.pick(e.Key).Put(ctx, e)
}

func (c *clusterStorage) Delete(ctx context.Context, key string) error {
	if c.secondary && !isLocalStorage(key) {
		c.refusedWrites++
		return logical.ErrReadOnly
	}
	return c.pick(key).Delete(ctx, key)
}

// replicatedMount is one mount on a performance primary and a secondary:
// two backends over one replicated storage, each with its own local
// storage and cluster id, and one upstream account.
type replicatedMount struct {
	t                  *testing.T
	primary, secondary *testEnv
	replicated         *logical.InmemStorage
	forwarded          int // requests the secondary sent on to the primary
}

func newCluster(t *testing.T, base *testEnv, replicated logical.Storage, local *logical.InmemStorage, state consts.ReplicationState, id string) *testEnv {
	t.Helper()
	s := &clusterStorage{local: local, replicated: replicated, secondary: state.HasState(consts.ReplicationPerformanceSecondary)}
	conf := &logical.BackendConfig{
		StorageView: s,
		System: &logical.StaticSystemView{ReplicationStateVal: state, ClusterUUID: id,
			DefaultLeaseTTLVal: 24 * time.Hour, MaxLeaseTTLVal: 32 * 24 * time.Hour},
		Logger: logging.NewVaultLogger(hclog.LevelFromString(envOr("CARBON_TEST_LOG", "warn"))),
	}
	raw, err := Factory(context.Background(), conf)
	if err != nil {
		t.Fatal(err)
	}
	b := raw.(*backend)
	t.Cleanup(func() { b.clean(context.Background()) })
	if err := b.initializeOnce(context.Background(), &logical.InitializationRequest{Storage: s}); err != nil {
		t.Fatal(err)
	}
	return &testEnv{t: t, b: b, storage: s, climatiq: base.climatiq, altruistiq: base.altruistiq, projectID: base.projectID}
}

func newReplicatedMount(t *testing.T) *replicatedMount {
	base := newTestEnv(t) // the upstream fakes and their project
	replicated := &logical.InmemStorage{}
	return &replicatedMount{
		t:          t,
		replicated: replicated,
		primary:    newCluster(t, base, replicated, &logical.InmemStorage{}, consts.ReplicationPerformancePrimary, "cluster-primary"),
		secondary:  newCluster(t, base, replicated, &logical.InmemStorage{}, consts.ReplicationPerformanceSecondary, "cluster-secondary"),
	}
}

// onSecondary sends a request to the secondary as Vault does: a request
// the secondary answers ErrReadOnly is forwarded to the primary.
func (r *replicatedMount) onSecondary(op logical.Operation, path string, data map[string]any) *logical.Response {
	r.t.Helper()
	resp, err := r.secondary.doErr(op, path, data)
	if errors.Is(err, logical.ErrReadOnly) {
		r.forwarded++
		resp, err = r.primary.doErr(op, path, data)
	}
	if err != nil || (resp != nil && resp.IsError()) {
		r.t.Fatalf("%s %s on the secondary: %v %v", op, path, resp, err)
	}
	return resp
}

func markerOf(t *testing.T, name string) string {
	t.Helper()
	m, _, ok := parseKeyName(name)
	if !ok {
		t.Fatalf("key name %q carries no marker", name)
	}
	return m
}

// TestPerformanceReplicationKeepsEachClustersKeysItsOwn: configuration
// written on a secondary is forwarded and written once, on the primary;
// each cluster names its keys with its own marker and records them in its
// own storage; neither cluster's tidy, with min_age=0, deletes the other's
// keys or the primary's static key; and each revokes its own.
func TestPerformanceReplicationKeepsEachClustersKeysItsOwn(t *testing.T) {
	r := newReplicatedMount(t)
	p, s := r.primary, r.secondary

	r.onSecondary(logical.CreateOperation, "config/cq", map[string]any{"provider": "climatiq", "management_key": testManagementKey,
		"management_url": p.climatiq.ManagementURL(), "api_url": p.climatiq.APIURL(), "max_retries": 1})
	r.onSecondary(logical.CreateOperation, "roles/ci", map[string]any{"config": "cq", "project_id": p.projectID})
	r.onSecondary(logical.CreateOperation, "static-roles/app", map[string]any{"config": "cq", "project_id": p.projectID, "rotation_period": "1h"})
	if r.forwarded != 3 {
		t.Fatalf("%d of 3 configuration writes on the secondary were forwarded to the primary", r.forwarded)
	}
	if n := s.storage.(*clusterStorage).refusedWrites; n != 0 {
		t.Fatalf("the secondary ran configuration writes until its storage refused %d of them; they must be forwarded before they start", n)
	}
	if resp := s.mustOK(logical.ReadOperation, "config/cq", nil); resp == nil || resp.Data["provider"] != "climatiq" {
		t.Fatalf("the secondary does not read the replicated connection: %v", resp)
	}

	primaryLease := p.mustOK(logical.ReadOperation, "creds/ci", nil)
	secondaryLease := s.mustOK(logical.ReadOperation, "creds/ci", nil) // issued on the secondary: not forwarded
	if r.forwarded != 3 {
		t.Fatal("an issuance on the secondary was forwarded: its lease would be the primary's")
	}
	primaryKey, secondaryKey := primaryLease.Data["key_id"].(string), secondaryLease.Data["key_id"].(string)
	staticKey := s.mustOK(logical.ReadOperation, "static-creds/app", nil).Data["key_id"].(string)
	if pm, sm := markerOf(t, primaryLease.Data["key_name"].(string)), markerOf(t, secondaryLease.Data["key_name"].(string)); pm == sm {
		t.Fatalf("both clusters name their keys with marker %s", pm)
	}
	if got := sortedKeys(p.listedKeys()); strings.Join(got, ",") != strings.Join(sortedStrings(primaryKey, staticKey), ",") {
		t.Fatalf("the primary lists keys %v, want its own %s and the static key %s", got, primaryKey, staticKey)
	}
	if got := sortedKeys(s.listedKeys()); strings.Join(got, ",") != secondaryKey {
		t.Fatalf("the secondary lists keys %v, want only its own %s", got, secondaryKey)
	}

	for _, c := range []*testEnv{p, s} {
		report := c.mustOK(logical.UpdateOperation, "tidy", map[string]any{"min_age": "0s"}).Data
		if n := len(report["orphans"].([]string)) + len(report["expired"].([]string)); n != 0 || report["deleted"] != 0 {
			t.Fatalf("a cluster's tidy took another's keys: %v", report)
		}
	}
	for _, id := range []string{primaryKey, secondaryKey, staticKey} {
		if !p.upstreamHas(id) {
			t.Fatalf("key %s did not survive both clusters' tidy", id)
		}
	}

	if _, err := s.revoke(secondaryLease.Secret); err != nil {
		t.Fatal(err)
	}
	if _, err := p.revoke(primaryLease.Secret); err != nil {
		t.Fatal(err)
	}
	if p.upstreamHas(primaryKey) || p.upstreamHas(secondaryKey) || !p.upstreamHas(staticKey) {
		t.Fatal("each cluster's revocation should delete its own key and leave the static key")
	}
}

// TestSecondaryLeavesThePrimarysCopiedRecordsAlone: a secondary that holds
// copies of the primary's marker, inventory and WAL (replicated before
// they were local storage) names its keys with a marker of its own, and
// neither its WAL rollback nor its tidy, long past the copied expiries,
// deletes the primary's keys: the primary renewed them, and its records
// are not the copies.
func TestSecondaryLeavesThePrimarysCopiedRecordsAlone(t *testing.T) {
	r := newReplicatedMount(t)
	p := r.primary
	p.writeClimatiqConfig("cq", nil)
	p.writeRole("ci", map[string]any{"config": "cq", "project_id": p.projectID, "ttl": "1h", "max_ttl": "2h"})
	lease := p.mustOK(logical.ReadOperation, "creds/ci", nil)
	primaryKey := lease.Data["key_id"].(string)
	primaryMarker := markerOf(t, lease.Data["key_name"].(string))
	// A WAL entry of the primary's covering a key it holds, as a copy
	// would carry one that the primary has since retired.
	copied := p.climatiq.AddKey(p.projectID, markedName(t, p, time.Now().Add(-time.Hour), "ddddd1"))
	if _, err := putWALFor(p, copied.Name); err != nil {
		t.Fatal(err)
	}

	// The secondary starts from a copy of the primary's local storage.
	local := &logical.InmemStorage{}
	primaryLocal := p.storage.(*clusterStorage).local
	keys, err := logical.CollectKeys(context.Background(), primaryLocal)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		e, err := primaryLocal.Get(context.Background(), k)
		if err != nil || e == nil {
			t.Fatal(k, err)
		}
		if err := local.Put(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	if err := local.Delete(context.Background(), markerClusterStorageKey); err != nil { // written by v0.2: no cluster record
		t.Fatal(err)
	}
	s := newCluster(t, p, r.replicated, local, consts.ReplicationPerformanceSecondary, "cluster-secondary")
	s.b.startedAt = time.Now().Add(2 * time.Second) // the copied WAL entries predate it: stale

	own := s.mustOK(logical.ReadOperation, "creds/ci", nil)
	if m := markerOf(t, own.Data["key_name"].(string)); m == primaryMarker {
		t.Fatalf("the secondary names its keys with the primary's marker %s", m)
	}
	runRollbackManager(t, s)
	clock := newFakeClock()
	clock.Advance(100 * time.Hour) // far past the copied entry's expiry
	s.b.clock = clock.Now
	report := s.mustOK(logical.UpdateOperation, "tidy", map[string]any{"min_age": "0s"}).Data
	for _, id := range []string{primaryKey, copied.ID} {
		if !p.upstreamHas(id) {
			t.Fatalf("the secondary deleted the primary's key %s from its copied records", id)
		}
	}
	// Its own records it does act on: its key, past its max_ttl, expired.
	ownKey := own.Data["key_id"].(string)
	if expired := report["expired"].([]string); len(expired) != 1 || expired[0] != ownKey || p.upstreamHas(ownKey) {
		t.Fatalf("the secondary's tidy expired %v, want only its own key %s", expired, ownKey)
	}
}

// putWALFor writes the WAL entry of a key creation through connection cq.
func putWALFor(e *testEnv, keyName string) (string, error) {
	return framework.PutWAL(context.Background(), e.storage, walKindClimatiqKey,
		&ownedKey{Config: "cq", Role: "ci", ProjectID: e.projectID, KeyName: keyName})
}

func sortedStrings(s ...string) []string {
	sort.Strings(s)
	return s
}
