package carbon

import (
	"context"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
)

// Under performance replication each cluster has its own tokens and
// leases, so each has its own keys: what a cluster's leases need is kept in
// storage local to it, and everything else is configuration, replicated
// from the primary and written there (docs/storage.md, "Replication").
//
// Local: the WAL, the mount marker (each cluster names its keys with its
// own, so one cluster's tidy never takes another's keys for orphans), the
// inventory, release records, tidy's report and the storage format of
// these. Replicated, and forwarded to the primary when written on a
// secondary: config/, roles/, static-roles/ (a static role's key is the
// primary's; secondaries serve it from the replicated role) and
// rotate-role/.
var localStoragePrefixes = []string{
	framework.WALPrefix,
	markerStorageKey, // also markerClusterStorageKey
	keyListPrefix,
	legacyInventoryPrefix,
	format3RecordPrefix,
	releasedStoragePrefix,
	"tidy/",
	formatStorageKey,
}

// markerClusterStorageKey records the cluster that made the marker, so a
// performance secondary can tell its own marker from a copy of the
// primary's, replicated before the marker was local storage (v0.2 and
// earlier).
const markerClusterStorageKey = "marker-cluster"

// mayWriteLocalStorage: this node may write the cluster-local storage and
// run what writes only there (issuance's records, WAL rollback, tidy): the
// active node of a cluster that is not a DR secondary. The replicated
// storage takes writes only where WriteSafeReplicationState holds (the
// primary).
func (b *backend) mayWriteLocalStorage() bool {
	state := b.System().ReplicationState()
	return !state.HasState(consts.ReplicationDRSecondary) && !state.HasState(consts.ReplicationPerformanceStandby)
}

// onPerformanceSecondary: a cluster whose replicated storage belongs to
// another (a mount marked local belongs to this cluster alone).
func (b *backend) onPerformanceSecondary() bool {
	if b.System() == nil {
		return false // not set up: a test's bare backend, one cluster
	}
	return !b.System().LocalMount() && b.System().ReplicationState().HasState(consts.ReplicationPerformanceSecondary)
}

// markerIsForeign reports whether a stored marker was made by another
// cluster: on a performance secondary, one this cluster did not record as
// its own is a copy of the primary's. Elsewhere a stored marker is always
// this cluster's (after a DR promotion or a snapshot restore too: the
// keys it names are in this cluster's records).
func (b *backend) markerIsForeign(ctx context.Context, s logical.Storage) (bool, error) {
	if !b.onPerformanceSecondary() {
		return false, nil
	}
	entry, err := s.Get(ctx, markerClusterStorageKey)
	if err != nil {
		return false, err
	}
	cluster, err := b.System().ClusterID(ctx)
	if err != nil {
		return false, err
	}
	return entry == nil || string(entry.Value) != cluster, nil
}

// recordMarkerCluster notes that this cluster made the marker. Where the
// cluster has no id to give (a single cluster may not), nothing needs it.
func (b *backend) recordMarkerCluster(ctx context.Context, s logical.Storage) error {
	if b.System() == nil {
		return nil
	}
	cluster, err := b.System().ClusterID(ctx)
	if err != nil || cluster == "" {
		if b.onPerformanceSecondary() {
			return err
		}
		return nil
	}
	return s.Put(ctx, &logical.StorageEntry{Key: markerClusterStorageKey, Value: []byte(cluster)})
}

// anotherClustersMarker reports whether a marker found in this cluster's
// local storage is another cluster's: on a performance secondary, the
// WAL entries and records copied from the primary before they were local
// storage. Such an entry is dropped and such a record only ever spared:
// the keys they name are the primary's, whose records are not here.
func (b *backend) anotherClustersMarker(ctx context.Context, s logical.Storage, marker string) (bool, error) {
	if !b.onPerformanceSecondary() {
		return false, nil
	}
	own, err := b.mountMarker(ctx, s)
	if err != nil {
		return false, err
	}
	if marker != own {
		b.Logger().Debug("leaving a WAL entry or record of another cluster's marker to that cluster", "marker", marker)
	}
	return marker != own, nil
}

// anotherClustersName is anotherClustersMarker for a key name.
func (b *backend) anotherClustersName(ctx context.Context, s logical.Storage, name string) (bool, error) {
	marker, _, _ := parseKeyName(name)
	return b.anotherClustersMarker(ctx, s, marker)
}
