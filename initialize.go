package carbon

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// The one way in: Vault calls Initialize once per instance, on every node;
// initializeOnce is one attempt at it, which tests call directly.

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
	return b.startMechanisms(ctx, req)
}

// startMechanisms finishes any move of the inventory's storage layout where
// this cluster's local storage may be written, then, where the replicated
// storage may be written too (the active node of the primary), starts the
// rotation scheduler and the check of static roles' keys.
func (b *backend) startMechanisms(ctx context.Context, req *logical.InitializationRequest) error {
	if !b.mayWriteLocalStorage() {
		b.Logger().Debug("not initializing: storage is read-only here")
		return nil
	}
	if err := b.moveLegacyInventory(ctx, req.Storage); err != nil {
		return fmt.Errorf("moving the inventory to the current storage layout: %w", err)
	}
	b.backgroundDone.Add(1)
	go func() {
		defer b.backgroundDone.Done()
		ctx, cancel := contextUntil(b.stopBackground)
		defer cancel()
		b.deleteFormat3Records(ctx, req.Storage)
	}()
	if !b.WriteSafeReplicationState() {
		b.Logger().Debug("not starting the rotation scheduler: static roles rotate on the primary")
		return nil
	}
	if err := b.startRotationScheduler(ctx, req.Storage); err != nil {
		return err
	}
	checked := b.staticKeyChecks.started()
	b.backgroundDone.Add(1)
	go func() {
		defer b.backgroundDone.Done()
		defer close(checked)
		ctx, cancel := contextUntil(b.stopBackground)
		defer cancel()
		b.checkStaticKeys(ctx, req.Storage)
	}()
	return nil
}

// retryInitialize runs Initialize's steps again in the background until
// they succeed: Vault only logs an error from Initialize and serves on, so
// without this one storage error would leave the mount without rotations
// and overlap ends until its next restart. Clean stops it.
func (b *backend) retryInitialize(req *logical.InitializationRequest, err error) {
	b.initRetryLock.Lock()
	defer b.initRetryLock.Unlock()
	if b.stopInitRetry != nil || b.initRetryStopped {
		return // Vault initializes an instance once; one loop suffices
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	b.stopInitRetry, b.initRetryDone = cancel, done
	go func() {
		defer close(done)
		delay := b.initRetryDelay
		for {
			b.Logger().Warn("initializing the mount failed; retrying, the rotation scheduler starts once it succeeds",
				"error", err, "retry_in", delay.String())
			timer := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case <-timer.C:
			}
			if err = b.initializeOnce(ctx, req); err == nil {
				b.Logger().Info("initialized the mount after retrying")
				return
			}
			delay = min(2*delay, b.initRetryMax)
		}
	}()
}

// stopInitializeRetries ends retryInitialize and keeps it from starting
// again. It waits for an attempt in flight, so that Clean stops the
// scheduler the attempt may have started.
func (b *backend) stopInitializeRetries() {
	b.initRetryLock.Lock()
	b.initRetryStopped = true
	stop, done := b.stopInitRetry, b.initRetryDone
	b.stopInitRetry, b.initRetryDone = nil, nil
	b.initRetryLock.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}
