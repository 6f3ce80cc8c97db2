package carbon

import (
	"context"
	"errors"
	"time"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
)

const (
	keyKindDynamic = "dynamic"
	keyKindStatic  = "static"
)

// ownedKey is one upstream key this mount owns; for a project_per_lease role,
// the key and the project made for it. The same record is written to the WAL
// before the key is created, kept in the inventory while the key lives, and
// carried in the lease's internal data, so every step that creates, tracks or
// deletes a key speaks of it in one shape. It never holds the key's value.
type ownedKey struct {
	// Kind is keyKindDynamic (a lease's key; empty in WAL entries written
	// by the first release) or keyKindStatic (a static role's key).
	Kind            string `json:"kind,omitempty"`
	Config          string `json:"config"`
	Role            string `json:"role"`
	ProjectID       string `json:"project_id"`
	ProjectPerLease bool   `json:"project_per_lease,omitempty"`
	// KeyName is unique (see keyname.go), so the key can be found upstream
	// when the create's answer was lost.
	KeyName string `json:"key_name"`
	// KeyID is empty in a WAL entry until the upstream answered the create.
	KeyID   string    `json:"key_id,omitempty"`
	Created time.Time `json:"created,omitzero"`
	// Expires is when a dynamic key's lease ends at the latest (its
	// max_ttl); zero for static keys.
	Expires time.Time `json:"expires,omitzero"`
}

func (k *ownedKey) kind() string {
	if k.Kind == "" {
		return keyKindDynamic
	}
	return k.Kind
}

// leaseData is the lease's internal data: what revoke and renew need.
func (k *ownedKey) leaseData() map[string]any {
	return map[string]any{
		"config":            k.Config,
		"role":              k.Role,
		"key_id":            k.KeyID,
		"key_name":          k.KeyName,
		"project_id":        k.ProjectID,
		"project_per_lease": k.ProjectPerLease,
		// The recorded times let a renewal tell, without a storage call,
		// whether the record must move (secrets.go).
		"created": k.Created,
		"expires": k.Expires,
	}
}

// deleteUpstream deletes the key upstream; for a per-lease project, the
// project, which takes its key with it. A key that is already gone counts
// as deleted: revocation must be idempotent. The client confirms "gone"
// against the project's key list, since a missing id may be answered 403
// or 400 rather than 404.
func deleteUpstream(ctx context.Context, client *climatiq.Client, k *ownedKey) error {
	var err error
	if k.ProjectPerLease {
		err = client.DeleteProject(ctx, k.ProjectID)
	} else {
		err = client.DeleteProjectKey(ctx, k.ProjectID, k.KeyID)
	}
	if errors.Is(err, climatiq.ErrNotFound) {
		return nil
	}
	return err
}

// ignoreNotFound treats "already gone" upstream as success.
func ignoreNotFound(err error) error {
	if errors.Is(err, climatiq.ErrNotFound) {
		return nil
	}
	return err
}
