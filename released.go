package carbon

import (
	"context"
	"net/url"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// A released key is one the operator took over: a static role removed with
// delete_key_on_remove=false leaves its keys upstream. They still carry this
// mount's marker, so without a record tidy would take them for orphans.
// released/<escaped key id> records each; tidy and rollback never delete a
// key recorded here. Adopting the key again removes the record.
const releasedStoragePrefix = "released/"

func releasedPath(keyID string) string {
	return releasedStoragePrefix + url.PathEscape(keyID)
}

// releasedKey is what the mount remembers of a key it let go.
type releasedKey struct {
	ownedKey
	Released time.Time `json:"released"`
}

func releaseKey(ctx context.Context, s logical.Storage, k *ownedKey, now time.Time) error {
	return putEntry(ctx, s, releasedPath(k.KeyID), &releasedKey{ownedKey: *k, Released: now.UTC()})
}

func unreleaseKey(ctx context.Context, s logical.Storage, keyID string) error {
	return s.Delete(ctx, releasedPath(keyID))
}

// releasedKeyIDs lists the ids of every released key, without reading the
// entries.
func releasedKeyIDs(ctx context.Context, s logical.Storage) ([]string, error) {
	escaped, err := s.List(ctx, releasedStoragePrefix)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(escaped))
	for _, e := range escaped {
		if id, err := url.PathUnescape(e); err == nil {
			ids = append(ids, id)
		}
	}
	return ids, nil
}
