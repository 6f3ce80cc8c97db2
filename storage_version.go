package carbon

import (
	"context"
	"fmt"
	"sync"

	"github.com/hashicorp/vault/sdk/logical"
)

// The mount's storage layout carries a format version, so that a plugin
// binary never misreads a layout newer than it knows (after a downgrade with
// `vault secrets tune -plugin-version=<older>`): it refuses to serve instead.
//
// Formats:
//
//	1  v0.1.x: a static role keeps one replaced key in previous_key_id,
//	   previous_key_name and previous_expires. No format-version entry.
//	2  a static role keeps every replaced key in previous_keys. Nothing is
//	   migrated eagerly: a role is read into the list form when loaded and
//	   written in it on its next change, with the newest replaced key also
//	   in the format-1 fields, so a v0.1.x binary still reads it correctly.
//	3  the inventory lives at key/ and keylist/ (inventory.go), moved from
//	   inventory/ at initialize. v0.1.x, which has no format check, meets a
//	   tombstone in inventory/ that fails its inventory walks instead of
//	   letting its tidy take the moved keys for orphans
//	   (inventory_legacy.go).
//	4  one storage entry per key: the keylist/ entry is the record
//	   (format 3 also wrote key/<id>, which is no longer read and is
//	   deleted in the background at initialize); a renewal that moves the
//	   expiry adds an entry instead of moving one; issuance is covered by
//	   WAL entries of kind climatiq_issuance_block. A format-3 binary would
//	   look records up at key/ and take held keys for stranded ones, so it
//	   must refuse this format.
//
// A change that an older binary would misread raises the format; the older
// binary then refuses the mount rather than serve from a layout it cannot
// read.
const (
	storageFormatVersion = 4
	formatStorageKey     = "format-version"
)

type storageFormat struct {
	Version int `json:"version"`
	// WrittenBy is the plugin version that last wrote the entry: the
	// version to switch back to when an older binary refuses the mount.
	WrittenBy string `json:"written_by"`
}

// formatGate remembers whether this instance may serve the mount's storage.
type formatGate struct {
	lock    sync.Mutex
	checked bool
	newer   *storageFormat // set when the stored format is newer than this binary's
}

// storageRefusal reads the mount's format version once per instance and
// returns a non-nil error when the layout is newer than this binary reads.
func (b *backend) storageRefusal(ctx context.Context, s logical.Storage, mountPoint string) (refusal, readErr error) {
	b.format.lock.Lock()
	defer b.format.lock.Unlock()
	if !b.format.checked {
		stored, err := getEntry[storageFormat](ctx, s, formatStorageKey)
		if err != nil {
			return nil, err
		}
		b.format.checked = true
		if stored != nil && stored.Version > storageFormatVersion {
			b.format.newer = stored
			b.Logger().Error("refusing to serve: storage format newer than this plugin version; no requests, rotations, rollbacks or tidy will run",
				"stored_format", stored.Version, "written_by", stored.WrittenBy, "known_format", storageFormatVersion, "version", Version)
		}
	}
	newer := b.format.newer
	if newer == nil {
		return nil, nil
	}
	if mountPoint == "" {
		mountPoint = "<mount>"
	}
	return logical.CodedError(statusServiceUnavailable, fmt.Sprintf(
		"this mount's storage is in format %d, written by plugin version %s; this plugin version (%s) reads formats up to %d and will not serve it, so that nothing is misread or lost. "+
			"Switch the mount back: vault secrets tune -plugin-version=%s %s && vault write sys/plugins/reload/backend mounts=%s",
		newer.Version, newer.WrittenBy, Version, storageFormatVersion, newer.WrittenBy, mountPoint, mountPoint)), nil
}
