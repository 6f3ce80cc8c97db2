package carbon

import (
	"context"
	"fmt"
	"sync"
	"time"

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

// Initialize records the format version (on nodes that may write) before
// the rotation scheduler starts, and starts nothing on a newer layout. A
// storage error is retried in the background (retryInitialize) rather than
// returned: Vault would only log it.
func (b *backend) Initialize(ctx context.Context, req *logical.InitializationRequest) error {
	if err := b.initializeOnce(ctx, req); err != nil {
		b.retryInitialize(req, err)
	}
	return nil
}

// initializeOnce is one attempt at Initialize; every step is idempotent.
func (b *backend) initializeOnce(ctx context.Context, req *logical.InitializationRequest) error {
	refusal, err := b.storageRefusal(ctx, req.Storage, "")
	if err != nil {
		return err
	}
	if refusal != nil {
		// Not an error for Vault: the mount stays, and answers every
		// request with the refusal and the way back.
		return nil
	}
	if b.mayWriteLocalStorage() {
		stored, err := getEntry[storageFormat](ctx, req.Storage, formatStorageKey)
		if err != nil {
			return err
		}
		if stored == nil || *stored != (storageFormat{Version: storageFormatVersion, WrittenBy: Version}) {
			// Format 1 → 2 needs no eager migration (see above). A failed
			// write (leadership lost mid-start) must not keep the scheduler
			// from starting: format 2 is readable by every older binary, and
			// the next start writes it.
			if err := putEntry(ctx, req.Storage, formatStorageKey, storageFormat{Version: storageFormatVersion, WrittenBy: Version}); err != nil {
				b.Logger().Warn("recording the storage format version failed; will retry at the next start", "error", err)
			}
		}
	}
	return b.Backend.Initialize(ctx, req)
}

// HandleRequest refuses every request, lease revocation and renewal
// included, while the storage is newer than this binary: Vault keeps a
// refused revocation and retries it, where a misread one could lose a key.
// Rollback (WAL and periodic tidy) is skipped silently, help still works.
func (b *backend) HandleRequest(ctx context.Context, req *logical.Request) (*logical.Response, error) {
	refusal, err := b.storageRefusal(ctx, req.Storage, req.MountPoint)
	switch {
	case req.Operation == logical.HelpOperation:
	case err != nil:
		return nil, err
	case refusal != nil && req.Operation == logical.RollbackOperation:
		return nil, nil
	case refusal != nil:
		return nil, refusal
	}
	if resp, err := answerUnrouted(req); resp != nil || err != nil {
		return resp, err
	}
	// Before the framework parses the fields: its error would quote a
	// mistyped secret (path_config.go).
	if resp := b.refuseMistypedSecrets(req); resp != nil {
		return resp, nil
	}
	if _, ok := ctx.Deadline(); !ok && req.Operation != logical.RollbackOperation {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, requestDeadline)
		defer cancel()
	}
	return b.Backend.HandleRequest(ctx, req)
}

// requestDeadline bounds a request's own work (its upstream calls, waits
// and inline rollback) inside the CLI's 60 s: Vault keeps its request limit
// to itself and passes a plugin no deadline, so without one a request would
// run on after its caller gave up, who would see only a timeout. Rollback
// (WAL entries, periodic tidy) has no caller waiting and is not bounded.
const requestDeadline = 55 * time.Second
