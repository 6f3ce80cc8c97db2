package carbon

import (
	"context"
	"errors"
	"net/url"

	"github.com/hashicorp/vault/sdk/logical"
)

// The inventory records every upstream key this mount owns, so that
// max_keys can be enforced, a WAL rollback can tell a tracked key from a
// stranded one, and tidy can find keys nobody tracks. Entries live at
// inventory/<kind>/<role>/<escaped key name>: counting a role's keys is one
// List of a short prefix, and the name, unlike the id, is known before the
// key is created, so a WAL entry can be checked against the inventory
// without asking the upstream.
const inventoryStoragePrefix = "inventory/"

func inventoryRolePrefix(kind, role string) string {
	return inventoryStoragePrefix + kind + "/" + role + "/"
}

// inventoryPath escapes the key name: adopted keys' names are the
// upstream's and could contain '/'.
func inventoryPath(kind, role, keyName string) string {
	return inventoryRolePrefix(kind, role) + url.PathEscape(keyName)
}

func putInventory(ctx context.Context, s logical.Storage, k *ownedKey) error {
	return putEntry(ctx, s, inventoryPath(k.kind(), k.Role, k.KeyName), k)
}

func getInventory(ctx context.Context, s logical.Storage, kind, role, keyName string) (*ownedKey, error) {
	return getEntry[ownedKey](ctx, s, inventoryPath(kind, role, keyName))
}

func deleteInventory(ctx context.Context, s logical.Storage, k *ownedKey) error {
	return s.Delete(ctx, inventoryPath(k.kind(), k.Role, k.KeyName))
}

// countInventory returns how many live keys a role owns.
func countInventory(ctx context.Context, s logical.Storage, kind, role string) (int, error) {
	ids, err := s.List(ctx, inventoryRolePrefix(kind, role))
	return len(ids), err
}

// walkInventory calls fn for every inventory entry.
func walkInventory(ctx context.Context, s logical.Storage, fn func(*ownedKey) error) error {
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
			names, err := s.List(ctx, inventoryStoragePrefix+kind+role)
			if err != nil {
				return err
			}
			for _, name := range names {
				k, err := getEntry[ownedKey](ctx, s, inventoryStoragePrefix+kind+role+name)
				if err != nil {
					return err
				}
				if k == nil {
					continue
				}
				if err := fn(k); err != nil {
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
	err := walkInventory(ctx, s, func(k *ownedKey) error {
		if k.Config == config {
			n++
		}
		return nil
	})
	return n, err
}

// findInventoryByID returns the inventory entry of a key id, or nil. It
// walks the inventory: adoption checks are rare administrative writes.
func findInventoryByID(ctx context.Context, s logical.Storage, keyID string) (*ownedKey, error) {
	var found *ownedKey
	errFound := errors.New("found")
	err := walkInventory(ctx, s, func(k *ownedKey) error {
		if k.KeyID == keyID {
			found = k
			return errFound
		}
		return nil
	})
	if err != nil && !errors.Is(err, errFound) {
		return nil, err
	}
	return found, nil
}
