package carbon

import (
	"context"
	"net/url"

	"github.com/hashicorp/vault/sdk/logical"
)

// The v0.1 inventory layout, inventory/<kind>/<role>/<escaped key name>,
// read until initialize has moved every entry to the current layout
// (inventory.go). The move is idempotent: an entry is written to the new
// layout before it is deleted from the old, so a move cut short by a
// restart is finished by the next start.

// legacyTombstone sits where v0.1 walks its inventory. Its value is not an
// inventory entry, so a downgraded v0.1 plugin fails every walk of it (tidy,
// keys/ listing, config delete) with an error naming this key, instead of
// taking the moved keys for orphans and deleting them. The current code
// skips it.
const (
	legacyTombstoneKind = "moved-to-key-and-keylist/"
	legacyTombstoneKey  = legacyInventoryPrefix + legacyTombstoneKind + "downgrade-not-supported/upgrade-the-plugin-again"
)

func legacyInventoryPath(kind, role, keyName string) string {
	return legacyInventoryPrefix + kind + "/" + role + "/" + url.PathEscape(keyName)
}

// walkLegacyInventory calls fn for every entry left in the old layout.
func walkLegacyInventory(ctx context.Context, s logical.Storage, fn func(*ownedKey) error) error {
	kinds, err := s.List(ctx, legacyInventoryPrefix)
	if err != nil {
		return err
	}
	for _, kind := range kinds {
		if kind == legacyTombstoneKind {
			continue
		}
		roles, err := s.List(ctx, legacyInventoryPrefix+kind)
		if err != nil {
			return err
		}
		for _, role := range roles {
			names, err := s.List(ctx, legacyInventoryPrefix+kind+role)
			if err != nil {
				return err
			}
			for _, name := range names {
				k, err := getEntry[ownedKey](ctx, s, legacyInventoryPrefix+kind+role+name)
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

// getLegacyKey reads a key of the old layout by its role and name.
func getLegacyKey(ctx context.Context, s logical.Storage, kind, role, keyName string) (*ownedKey, error) {
	return getEntry[ownedKey](ctx, s, legacyInventoryPath(kind, role, keyName))
}

// moveLegacyInventory moves every entry of the old layout to the current
// one, then marks the move done for this instance.
func (b *backend) moveLegacyInventory(ctx context.Context, s logical.Storage) error {
	moved := 0
	err := walkLegacyInventory(ctx, s, func(k *ownedKey) error {
		moved++
		return moveLegacyKey(ctx, s, k)
	})
	if err != nil {
		return err
	}
	if tomb, err := s.Get(ctx, legacyTombstoneKey); err != nil {
		return err
	} else if tomb == nil {
		if err := s.Put(ctx, &logical.StorageEntry{Key: legacyTombstoneKey,
			Value: []byte(`"the inventory moved to key/ and keylist/ (plugin v0.2 and later); this plugin version cannot read it: register the newer version again"`)}); err != nil {
			return err
		}
	}
	b.legacyInventoryMoved.Store(true)
	if moved > 0 {
		b.Logger().Info("moved the inventory to the current storage layout", "keys", moved)
	}
	return nil
}

// moveLegacyKey writes one old-layout entry to the current layout, then
// deletes it; the live counts, which count each id once, do not change.
func moveLegacyKey(ctx context.Context, s logical.Storage, k *ownedKey) error {
	k.Kind = k.kind()
	if err := s.Put(ctx, &logical.StorageEntry{Key: k.listingPath()}); err != nil {
		return err
	}
	return s.Delete(ctx, legacyInventoryPath(k.kind(), k.Role, k.KeyName))
}
