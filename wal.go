package carbon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
)

// walKindClimatiqKey covers the creation of a Climatiq key (and, for
// project_per_lease roles, its project). It is written before the upstream
// create and deleted once the key is in the inventory.
const walKindClimatiqKey = "climatiq_key"

// rollbackTimeout bounds an in-request rollback after a failed issuance.
const rollbackTimeout = 2 * time.Minute

type climatiqKeyWAL struct {
	// Kind is keyKindDynamic (a lease's key; empty in entries of older
	// versions) or keyKindStatic (a static role's key).
	Kind            string `json:"kind,omitempty"`
	Config          string `json:"config"`
	Role            string `json:"role"`
	ProjectID       string `json:"project_id"`
	ProjectPerLease bool   `json:"project_per_lease"`
	// KeyName is unique (see keyname.go), so the key can be found when the
	// create's answer was lost.
	KeyName string `json:"key_name"`
	// KeyID is known only to an in-request rollback, after the create
	// answered but a later step failed.
	KeyID string `json:"key_id,omitempty"`
}

// walRollback dispatches the framework's WAL rollback by entry kind.
func (b *backend) walRollback(ctx context.Context, req *logical.Request, kind string, data any) error {
	switch kind {
	case walKindClimatiqKey:
		var w climatiqKeyWAL
		if err := decodeWAL(data, &w); err != nil {
			return err
		}
		return b.rollbackClimatiqKey(ctx, req.Storage, &w)
	default:
		b.Logger().Warn("dropping WAL entry of unknown kind", "kind", kind)
		return nil
	}
}

// decodeWAL converts the framework's generic WAL data into its typed form.
func decodeWAL(data any, out any) error {
	raw, err := json.Marshal(data)
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, out)
}

// rollbackClimatiqKey deletes whatever the covered issuance or rotation
// created upstream, unless the key made it into the mount's records.
func (b *backend) rollbackClimatiqKey(ctx context.Context, s logical.Storage, w *climatiqKeyWAL) error {
	conn, err := b.connection(ctx, s, w.Config)
	if err != nil {
		return err
	}
	if conn == nil || conn.climatiq == nil {
		// Nothing can reach the upstream any more; keeping the entry would
		// only retry forever.
		b.Logger().Warn("cannot roll back key creation: connection no longer exists", "config", w.Config, "key_name", w.KeyName)
		return nil
	}
	client := conn.climatiq

	if w.ProjectPerLease && w.ProjectID == "" {
		projects, err := client.ListProjects(ctx)
		if err != nil {
			return err
		}
		for _, p := range projects {
			if p.Name == w.KeyName {
				w.ProjectID = p.ID
			}
		}
		if w.ProjectID == "" {
			return nil // the project was never created
		}
	}

	// Most entries are spent issuances: the inventory already holds the
	// key, and no upstream call is needed to tell.
	if tracked, err := keyTracked(ctx, s, w); err != nil || tracked {
		return err
	}
	if w.KeyID == "" {
		keys, err := client.ListKeys(ctx, w.ProjectID)
		if err != nil && !errors.Is(err, climatiq.ErrNotFound) {
			return err
		}
		for _, k := range keys {
			if k.Name == w.KeyName {
				w.KeyID = k.ID
			}
		}
	}
	switch {
	case w.ProjectPerLease:
		err = ignoreNotFound(client.DeleteProject(ctx, w.ProjectID))
	case w.KeyID != "":
		err = ignoreNotFound(client.DeleteKey(ctx, w.KeyID))
	default:
		return nil // the key was never created
	}
	if err != nil {
		return fmt.Errorf("rolling back key %q: %w", w.KeyName, err)
	}
	if w.Kind == keyKindStatic {
		// A static key is recorded in the inventory before the role.
		if err := deleteInventory(ctx, s, keyKindStatic, w.Role, w.KeyName); err != nil {
			return err
		}
	}
	b.observe(ctx, eventKeyRollback, "config", w.Config, "role", w.Role,
		"key_id", w.KeyID, "key_name", w.KeyName, "project_id", w.ProjectID)
	return nil
}

// keyTracked reports whether the key covered by the WAL entry made it into
// the mount's records: a lease's inventory entry, or a static role that names
// it as its current or previous key.
func keyTracked(ctx context.Context, s logical.Storage, w *climatiqKeyWAL) (bool, error) {
	if w.Kind == keyKindStatic {
		role, err := getStaticRole(ctx, s, w.Role)
		if err != nil || role == nil {
			return false, err
		}
		return role.KeyName == w.KeyName || role.PreviousKeyName == w.KeyName, nil
	}
	entry, err := getInventory(ctx, s, keyKindDynamic, w.Role, w.KeyName)
	return entry != nil, err
}

// rollbackNow undoes a failed issuance at once instead of waiting for the
// rollback manager, and removes the WAL entry when that worked. It runs
// detached from the request's cancellation: a client that gave up must not
// stop the cleanup.
func (b *backend) rollbackNow(ctx context.Context, s logical.Storage, walID string, w *climatiqKeyWAL) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	if err := b.rollbackClimatiqKey(ctx, s, w); err != nil {
		b.Logger().Warn("rollback after failed issuance failed; the rollback manager will retry", "key_name", w.KeyName, "error", err)
		return
	}
	if err := framework.DeleteWAL(ctx, s, walID); err != nil {
		b.Logger().Warn("deleting WAL entry after rollback failed", "key_name", w.KeyName, "error", err)
	}
}

// ignoreNotFound treats "already gone" upstream as success: deleting is
// idempotent from Vault's point of view.
func ignoreNotFound(err error) error {
	if errors.Is(err, climatiq.ErrNotFound) {
		return nil
	}
	return err
}

// spentWALQueueSize bounds the spent WAL entries waiting for deletion; when
// it is full the issuance deletes its entry itself.
const spentWALQueueSize = 4096

type spentWALEntry struct {
	storage logical.Storage
	id      string
}

// retireWAL drops the WAL entry of a finished issuance off the request path:
// the key is in the inventory, so the entry is spent. If the plugin stops
// first, the rollback manager finds the key tracked and drops the entry.
func (b *backend) retireWAL(ctx context.Context, s logical.Storage, id string) {
	select {
	case b.spentWAL <- spentWALEntry{storage: s, id: id}:
	default:
		if err := framework.DeleteWAL(ctx, s, id); err != nil {
			b.Logger().Warn("deleting a spent WAL entry failed; the rollback manager will", "error", err)
		}
	}
}

func (b *backend) deleteSpentWAL(done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case e := <-b.spentWAL:
			if err := framework.DeleteWAL(context.Background(), e.storage, e.id); err != nil {
				b.Logger().Debug("deleting a spent WAL entry failed; the rollback manager will", "error", err)
			}
		}
	}
}
