package carbon

import (
	"context"
	"net/url"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// The inventory records every upstream key this mount owns, so that
// max_keys can be enforced, a WAL rollback can tell a tracked key from a
// stranded one, and tidy can find keys nobody tracks. Entries live at
// inventory/<kind>/<role>/<escaped key name>: counting a role's keys is one
// List of a short prefix, and the name, unlike the id, is known before the
// key is created, so a WAL entry can be checked against the inventory
// without asking the upstream.
const (
	inventoryStoragePrefix = "inventory/"

	keyKindDynamic = "dynamic"
	keyKindStatic  = "static"
)

// inventoryEntry describes one owned key; never its value.
type inventoryEntry struct {
	KeyID           string    `json:"key_id"`
	KeyName         string    `json:"key_name"`
	ProjectID       string    `json:"project_id"`
	ProjectPerLease bool      `json:"project_per_lease,omitempty"`
	Config          string    `json:"config"`
	Role            string    `json:"role"`
	Kind            string    `json:"kind"`
	Created         time.Time `json:"created"`
	Expires         time.Time `json:"expires"`
}

func inventoryRolePrefix(kind, role string) string {
	return inventoryStoragePrefix + kind + "/" + role + "/"
}

// inventoryPath escapes the key name: adopted keys' names are the
// upstream's and could contain '/'.
func inventoryPath(kind, role, keyName string) string {
	return inventoryRolePrefix(kind, role) + url.PathEscape(keyName)
}

func putInventory(ctx context.Context, s logical.Storage, e *inventoryEntry) error {
	return putEntry(ctx, s, inventoryPath(e.Kind, e.Role, e.KeyName), e)
}

func getInventory(ctx context.Context, s logical.Storage, kind, role, keyName string) (*inventoryEntry, error) {
	return getEntry[inventoryEntry](ctx, s, inventoryPath(kind, role, keyName))
}

func deleteInventory(ctx context.Context, s logical.Storage, kind, role, keyName string) error {
	return s.Delete(ctx, inventoryPath(kind, role, keyName))
}

// countInventory returns how many live keys a role owns.
func countInventory(ctx context.Context, s logical.Storage, kind, role string) (int, error) {
	ids, err := s.List(ctx, inventoryRolePrefix(kind, role))
	return len(ids), err
}

// walkInventory calls fn for every inventory entry.
func walkInventory(ctx context.Context, s logical.Storage, fn func(*inventoryEntry) error) error {
	kinds, err := s.List(ctx, inventoryStoragePrefix)
	if err != nil {
		return err
	}
	for _, kind := range kinds {
		roles, err := s.List(ctx, inventoryStoragePrefix+kind)
		if err != nil {
			return err
		}
		for _, role := range roles {
			ids, err := s.List(ctx, inventoryStoragePrefix+kind+role)
			if err != nil {
				return err
			}
			for _, id := range ids {
				e, err := getEntry[inventoryEntry](ctx, s, inventoryStoragePrefix+kind+role+id)
				if err != nil {
					return err
				}
				if e == nil {
					continue
				}
				if err := fn(e); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// inventoryCountForConfig returns how many live keys were issued through a
// connection.
func inventoryCountForConfig(ctx context.Context, s logical.Storage, config string) (int, error) {
	n := 0
	err := walkInventory(ctx, s, func(e *inventoryEntry) error {
		if e.Config == config {
			n++
		}
		return nil
	})
	return n, err
}
