package carbon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
)

// walKindClimatiqKey covers the creation of one Climatiq key: a static
// role's rotation, and (written by format 3 and earlier) an issuance, with
// its per-lease project. Its data is the ownedKey about to be created. It is
// written before the upstream create and deleted once the key is in the
// mount's records. Issuance now writes blocks (issuance_wal.go).
const walKindClimatiqKey = "climatiq_key"

// rollbackTimeout bounds an in-request rollback after a failed issuance
// when the request has no deadline of its own.
const rollbackTimeout = 2 * time.Minute

// walRollback dispatches the framework's WAL rollback by entry kind.
func (b *backend) walRollback(ctx context.Context, req *logical.Request, kind string, data any) error {
	switch kind {
	case walKindClimatiqKey:
		var key ownedKey
		if err := decodeInto(data, &key); err != nil {
			return err
		}
		return b.rollbackClimatiqKey(ctx, req.Storage, &key)
	case walKindIssuanceBlock:
		var blk issuanceBlock
		if err := decodeInto(data, &blk); err != nil {
			return err
		}
		return b.rollbackIssuanceBlock(ctx, req.Storage, &blk)
	default:
		b.Logger().Warn("dropping WAL entry of unknown kind", "kind", kind)
		return nil
	}
}

// rollbackClimatiqKey deletes whatever the covered issuance or rotation
// created upstream, unless the key made it into the mount's records.
func (b *backend) rollbackClimatiqKey(ctx context.Context, s logical.Storage, key *ownedKey) error {
	if another, err := b.anotherClustersName(ctx, s, key.KeyName); err != nil || another {
		return err
	}
	client, err := b.climatiqClient(ctx, s, key.Config)
	if err != nil {
		if errors.As(err, new(*connectionError)) {
			// Nothing can reach the upstream any more; keeping the entry
			// would only retry forever.
			b.Logger().Warn("cannot roll back key creation: connection no longer exists", "config", key.Config, "key_name", key.KeyName)
			return nil
		}
		return err
	}

	// Most entries are spent issuances: the mount's records already hold
	// the key, and no upstream call is needed to tell.
	if tracked, err := b.keyTracked(ctx, s, key); err != nil || tracked {
		return err
	}
	found, err := createdUpstream(ctx, client, key)
	if err != nil {
		return err
	}
	// An entry that lost the create's answer learns the key's id only
	// here, and the key may be recorded under it after all.
	var created []*ownedKey
	for _, k := range found {
		tracked, err := b.keyTracked(ctx, s, k)
		if err != nil {
			return err
		}
		if !tracked {
			created = append(created, k)
		}
	}
	// A create answered ambiguously and sent again can have made the key
	// twice: every copy goes.
	for _, k := range created {
		if err := deleteUpstream(ctx, client, k); err != nil {
			return fmt.Errorf("rolling back key %q: %w", key.KeyName, err)
		}
		key.KeyID, key.ProjectID = k.KeyID, k.ProjectID
	}
	if len(created) == 0 {
		return nil // nothing was created
	}
	if key.kind() == keyKindStatic {
		// A static key is recorded in the inventory before the role.
		if err := b.forgetKey(ctx, s, key); err != nil {
			return err
		}
	}
	b.logAndEmit(eventKeyRollback, "config", key.Config, "role", key.Role,
		"key_id", key.KeyID, "key_name", key.KeyName, "project_id", key.ProjectID)
	return nil
}

// createdUpstream finds what the create covered by a WAL entry made: the
// key by its id when the create answered, else every key (or per-lease
// project) with its unique name.
func createdUpstream(ctx context.Context, client *climatiq.Client, key *ownedKey) ([]*ownedKey, error) {
	var found []*ownedKey
	switch {
	case key.ProjectPerLease:
		projects, err := client.ListProjects(ctx)
		if err != nil {
			return nil, err
		}
		for _, p := range projects {
			if p.Name != key.KeyName && (key.ProjectID == "" || p.ID != key.ProjectID) {
				continue
			}
			// The project's key, when one was made, decides whether the
			// mount holds the project: an entry written before the
			// create carries no key id.
			k := *key
			k.ProjectID = p.ID
			if k.KeyID == "" {
				keys, err := client.ListKeys(ctx, p.ID)
				if ignoreNotFound(err) != nil {
					return nil, err
				}
				for _, listed := range keys {
					if listed.Name == key.KeyName {
						k.KeyID = listed.ID
					}
				}
			}
			found = append(found, &k)
		}
	case key.KeyID != "":
		found = append(found, key)
	default:
		keys, err := client.ListKeys(ctx, key.ProjectID)
		if ignoreNotFound(err) != nil {
			return nil, err
		}
		for _, listed := range keys {
			if listed.Name == key.KeyName {
				k := *key
				k.KeyID = listed.ID
				found = append(found, &k)
			}
		}
	}
	return found, nil
}

// keyTracked reports whether the key covered by the WAL entry made it into
// the mount's records: a lease's inventory entry (by id, once known), a
// static role that names it as its current or previous key, or a release
// record (a key the operator took over is never the mount's to delete).
// The role may be another than the entry's: a rotated key released when
// its role was deleted and then adopted by a new role is that role's.
func (b *backend) keyTracked(ctx context.Context, s logical.Storage, key *ownedKey) (bool, error) {
	if key.KeyID != "" {
		if released, err := s.Get(ctx, releasedPath(key.KeyID)); err != nil || released != nil {
			return released != nil, err
		}
		if held, err := b.heldByAnotherRole(ctx, s, key); err != nil || held {
			return held, err
		}
	}
	if key.kind() == keyKindStatic {
		role, err := getStaticRole(ctx, s, key.Role)
		if err != nil || role == nil {
			return false, err
		}
		return role.isOwnKey(key.KeyName), nil
	}
	if record, err := getKey(ctx, s, key.KeyID); err != nil || record != nil {
		return record != nil, err
	}
	if b.legacyInventoryMoved.Load() {
		return false, nil
	}
	legacy, err := getLegacyKey(ctx, s, keyKindDynamic, key.Role, key.KeyName)
	return legacy != nil, err
}

// heldByAnotherRole reports whether a static role other than the key's own
// holds it, by the roles its inventory entries name.
func (b *backend) heldByAnotherRole(ctx context.Context, s logical.Storage, key *ownedKey) (bool, error) {
	entries, _, err := keyEntries(ctx, s, key.KeyID)
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		if e.kind() != keyKindStatic || (key.kind() == keyKindStatic && e.Role == key.Role) {
			continue
		}
		role, err := getStaticRole(ctx, s, e.Role)
		if err != nil || role.holds(key.KeyID) {
			return err == nil, err
		}
	}
	return false, nil
}

// rollbackNow undoes a failed issuance or rotation at once instead of
// waiting for the rollback manager, and reports whether that resolved it;
// when not, the WAL entry must stay for the rollback manager. cause is why
// the issuance failed: a create that got no clear answer may still land
// upstream after this rollback looked, so it never resolves. It runs
// detached from the request's cancellation (a client that gave up must not
// stop the cleanup) but within its deadline: the caller is owed an answer,
// and the WAL entry covers what the rollback did not reach.
func (b *backend) rollbackNow(ctx context.Context, s logical.Storage, key *ownedKey, cause error) bool {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(rollbackTimeout)
	}
	ctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()
	if err := b.rollbackClimatiqKey(ctx, s, key); err != nil {
		b.Logger().Warn("rollback after a failed key creation failed; the rollback manager will retry", "key_name", key.KeyName, "error", err)
		return false
	}
	return !createMayStillLand(cause)
}

// createMayStillLand reports whether a failed create may yet take effect
// upstream: anything but a clear refusal (a 4xx other than 408 and 429)
// leaves that open. nil is a create that answered.
func createMayStillLand(err error) bool {
	if err == nil || errors.Is(err, climatiq.ErrNotFound) {
		return false
	}
	var refused *climatiq.Error
	return !errors.As(err, &refused) || refused.StatusCode < 400 || refused.StatusCode >= 500 ||
		refused.StatusCode == http.StatusRequestTimeout || refused.StatusCode == http.StatusTooManyRequests
}

// spentWALQueueSize bounds the spent WAL entries waiting for deletion; when
// it is full the issuance deletes its entry itself.
const spentWALQueueSize = 4096

type spentWALEntry struct {
	storage logical.Storage
	id      string
}

// retireWAL drops a spent WAL entry off the request path. After Clean,
// or when the queue is full, it is deleted at once.
func (b *backend) retireWAL(ctx context.Context, s logical.Storage, id string) {
	select {
	case <-b.stopBackground:
	default:
		select {
		case b.spentWAL <- spentWALEntry{storage: s, id: id}:
			return
		default:
		}
	}
	if err := framework.DeleteWAL(context.WithoutCancel(ctx), s, id); err != nil {
		b.Logger().Warn("deleting a spent WAL entry failed; the rollback manager will", "error", err)
	}
}

// deleteQueuedSpentWAL deletes the spent entries still queued, so a check
// for pending WAL entries does not count issuances that already finished.
func (b *backend) deleteQueuedSpentWAL(ctx context.Context) {
	for {
		select {
		case e := <-b.spentWAL:
			if err := framework.DeleteWAL(ctx, e.storage, e.id); err != nil {
				b.Logger().Debug("deleting a spent WAL entry failed; the rollback manager will", "error", err)
			}
		default:
			return
		}
	}
}

// spentWALDrainTimeout bounds how long a stopping instance spends deleting
// the spent entries still queued; what is left is resolved by the rollback
// manager (the keys are held, so nothing is deleted upstream).
const spentWALDrainTimeout = 5 * time.Second

func (b *backend) deleteSpentWAL(done <-chan struct{}) {
	for {
		select {
		case <-done:
			ctx, cancel := context.WithTimeout(context.Background(), spentWALDrainTimeout)
			b.deleteQueuedSpentWAL(ctx)
			cancel()
			return
		case e := <-b.spentWAL:
			if err := framework.DeleteWAL(context.Background(), e.storage, e.id); err != nil {
				b.Logger().Debug("deleting a spent WAL entry failed; the rollback manager will", "error", err)
			}
		}
	}
}

// dropWALAfterRollback undoes a failed rotation's create at once and drops
// its WAL entry when that worked.
func (b *backend) dropWALAfterRollback(ctx context.Context, s logical.Storage, walID string, key *ownedKey, cause error) {
	if !b.rollbackNow(ctx, s, key, cause) {
		return
	}
	if err := framework.DeleteWAL(context.WithoutCancel(ctx), s, walID); err != nil {
		b.Logger().Warn("deleting WAL entry after rollback failed; the rollback manager will", "key_name", key.KeyName, "error", err)
	}
}

// pendingWAL is a WAL entry with its id.
type pendingWAL struct {
	id    string
	entry *framework.WALEntry
}

// forEachPendingWAL calls fn with each WAL entry whose rollback goes
// through the given connection, and what it covers (a key's creation, or
// a block of issuances: its config and project scope).
func forEachPendingWAL(ctx context.Context, s logical.Storage, config string, fn func(pendingWAL, *ownedKey)) error {
	ids, err := framework.ListWAL(ctx, s)
	if err != nil {
		return err
	}
	for _, id := range ids {
		entry, err := framework.GetWAL(ctx, s, id)
		if err != nil {
			return err
		}
		var key ownedKey
		if entry != nil && (entry.Kind == walKindClimatiqKey || entry.Kind == walKindIssuanceBlock) && decodeInto(entry.Data, &key) == nil && key.Config == config {
			fn(pendingWAL{id: id, entry: entry}, &key)
		}
	}
	return nil
}
