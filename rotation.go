package carbon

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/queue"
	"github.com/hashicorp/vault/sdk/rotation"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
)

// The static-role rotation mechanism: a priority queue of roles by when
// they are next due (an overlap's end, a retry, a rotation), a ticker that
// pops what is due and hands it to a few workers, the rotation steps, and
// the back-off after failures. The queue lives on the node that may write
// and is rebuilt from storage when the plugin initializes.

const (
	// schedulerTick is how often due rotations are popped; lateness is
	// bounded by it. Idle ticks pop nothing and scan nothing.
	schedulerTick = time.Second
	// Due roles are worked on in parallel, so a burst of due roles waits
	// on the upstream's latency once rather than once each; a connection
	// gets only a few workers, so a hanging one delays only its own roles.
	maxRotationsRunning    = 32
	rotationsPerConnection = 4

	rotationBackoffMin = 5 * time.Second
	rotationBackoffMax = 5 * time.Minute
	rotationTimeout    = 2 * time.Minute
)

// rotateStaticRole replaces the role's key. Order: WAL, create the new key,
// record it (inventory, then the role, now naming the old key as previous),
// drop the WAL, then delete the old key now or when the overlap ends. A
// crash before the role is stored leaves the old key in charge and the WAL
// deletes the new one; after, the new key is in charge and the old one is
// deleted by the schedule.
//
// due is when the scheduler wanted the rotation (zero for a manual one); the
// event reports how late it ran.
func (b *backend) rotateStaticRole(ctx context.Context, s logical.Storage, name string, role *staticRole, client *climatiq.Client, due time.Time) error {
	started := b.now()
	// A rotation during an overlap ends that overlap first: a role never
	// has more than two keys.
	if role.PreviousKeyID != "" {
		if err := b.deletePreviousKey(ctx, s, name, role, client); err != nil {
			return err
		}
	}
	oldKeyID := role.KeyID
	if err := b.replaceStaticKey(ctx, s, name, role, client); err != nil {
		return err
	}
	if oldKeyID != "" && role.OverlapPeriod == 0 {
		// Best effort now; on failure the schedule retries.
		if err := b.deletePreviousKey(ctx, s, name, role, client); err != nil {
			b.Logger().Warn("deleting the replaced key failed; will retry", "role", name, "key_id", oldKeyID, "error", err)
		}
	}
	trigger, lateness := "manual", ""
	if !due.IsZero() {
		trigger, lateness = "schedule", strconv.FormatInt(started.Sub(due).Milliseconds(), 10)
	}
	b.logAndEmit(eventStaticRotate, "role", name, "key_id", role.KeyID, "previous_key_id", oldKeyID,
		"trigger", trigger, "lateness_ms", lateness)
	return nil
}

// replaceStaticKey creates a new key under a WAL entry and stores it as the
// role's current key, in the same write that records the key it replaces
// (if any) as the previous key, so no key is ever held by the inventory
// alone.
func (b *backend) replaceStaticKey(ctx context.Context, s logical.Storage, name string, role *staticRole, client *climatiq.Client) error {
	marker, err := b.mountMarker(ctx, s)
	if err != nil {
		return err
	}
	now := b.now()
	keyName, err := newKeyName(marker, now, sanitizeName(name))
	if err != nil {
		return err
	}
	key := role.ownedKey(name, "", keyName, now)
	walID, err := framework.PutWAL(ctx, s, walKindClimatiqKey, key)
	if err != nil {
		return fmt.Errorf("writing WAL entry before creating key: %w", err)
	}
	created, err := client.CreateKey(ctx, role.ProjectID, keyName)
	if err != nil {
		b.rollbackNow(ctx, s, walID, key)
		return upstreamError("creating key", err)
	}
	key.KeyID = created.ID

	previous := *role
	if role.KeyID != "" {
		role.PreviousKeyID, role.PreviousKeyName, role.PreviousExpires = role.KeyID, role.KeyName, now.Add(role.OverlapPeriod)
	}
	role.KeyID, role.KeyName, role.KeyValue = created.ID, keyName, created.Key
	role.LastRotated = now
	role.NextRotation = role.nextRotationAfter(now)
	role.clearFailure()
	err = putInventory(ctx, s, key)
	if err == nil {
		err = putStaticRole(ctx, s, name, role)
	}
	if err != nil {
		*role = previous
		b.rollbackNow(ctx, s, walID, key)
		return fmt.Errorf("recording the new key: %w", err)
	}
	if err := framework.DeleteWAL(ctx, s, walID); err != nil {
		b.Logger().Warn("deleting WAL entry after rotation failed", "role", name, "error", err)
	}
	return nil
}

// deletePreviousKey ends an overlap: the replaced key is deleted upstream
// (already gone counts) and forgotten.
func (b *backend) deletePreviousKey(ctx context.Context, s logical.Storage, name string, role *staticRole, client *climatiq.Client) error {
	id := role.PreviousKeyID
	previous := role.ownedKey(name, id, role.PreviousKeyName, time.Time{})
	if err := deleteUpstream(ctx, client, previous); err != nil {
		return upstreamError("deleting the replaced key", err)
	}
	if err := deleteInventory(ctx, s, previous); err != nil {
		return err
	}
	role.PreviousKeyID, role.PreviousKeyName, role.PreviousExpires = "", "", time.Time{}
	if err := putStaticRole(ctx, s, name, role); err != nil {
		return err
	}
	b.logAndEmit(eventStaticDelete, "role", name, "key_id", id)
	return nil
}

func (role *staticRole) clearFailure() {
	role.LastError, role.LastErrorTime, role.FailedAttempts, role.RetryAt = "", time.Time{}, 0, time.Time{}
}

// recordRotationFailure stores the error and when to retry, with
// exponential back-off.
func (b *backend) recordRotationFailure(ctx context.Context, s logical.Storage, name string, role *staticRole, cause error) {
	now := b.now()
	role.FailedAttempts++
	backoff := rotationBackoffMin << min(role.FailedAttempts-1, 10)
	if backoff > rotationBackoffMax {
		backoff = rotationBackoffMax
	}
	role.LastError, role.LastErrorTime, role.RetryAt = cause.Error(), now, now.Add(backoff)
	b.Logger().Warn("static role rotation failed; will retry", "role", name, "attempt", role.FailedAttempts, "retry_in", backoff, "error", cause)
	if err := putStaticRole(ctx, s, name, role); err != nil {
		b.Logger().Error("storing rotation failure", "role", name, "error", err)
	}
}

// dueAt is when the scheduler must next look at the role: the end of an
// overlap, a retry after a failure, or the next rotation.
func (role *staticRole) dueAt() time.Time {
	due := role.nextScheduledRotation()
	if !role.RetryAt.IsZero() {
		due = role.RetryAt
	}
	if role.PreviousKeyID != "" && (due.IsZero() || role.PreviousExpires.Before(due)) {
		due = role.PreviousExpires
	}
	return due
}

// queueItem is the role's place in the rotation queue, or nil when nothing
// is ever due. The item carries the role's connection, for the
// per-connection limit on work in flight.
func (role *staticRole) queueItem(name string) *queue.Item {
	due := role.dueAt()
	if due.IsZero() {
		return nil
	}
	return &queue.Item{Key: name, Value: role.Config, Priority: due.UnixMilli()}
}

// scheduleStaticRole (re)places the role in the rotation queue.
func (b *backend) scheduleStaticRole(name string, role *staticRole) {
	b.schedulerLock.Lock()
	defer b.schedulerLock.Unlock()
	if b.rotationQueue == nil {
		return // not the node that rotates
	}
	_, _ = b.rotationQueue.PopByKey(name)
	if item := role.queueItem(name); item != nil {
		_ = b.rotationQueue.Push(item)
	}
}

func (b *backend) unscheduleStaticRole(name string) {
	b.schedulerLock.Lock()
	defer b.schedulerLock.Unlock()
	if b.rotationQueue != nil {
		_, _ = b.rotationQueue.PopByKey(name)
	}
}

// initialize starts the rotation scheduler where writes are safe (the
// active node of a primary cluster), rebuilding the queue from storage so
// rotations missed while Vault was down run at once.
func (b *backend) initialize(ctx context.Context, req *logical.InitializationRequest) error {
	if !b.WriteSafeReplicationState() {
		b.Logger().Debug("not starting the rotation scheduler: storage is read-only here")
		return nil
	}
	names, err := req.Storage.List(ctx, staticRoleStoragePrefix)
	if err != nil {
		return err
	}
	q := queue.New()
	for _, name := range names {
		role, err := getStaticRole(ctx, req.Storage, name)
		if err != nil {
			return err
		}
		if role == nil {
			continue
		}
		if item := role.queueItem(name); item != nil {
			if err := q.Push(item); err != nil {
				return err
			}
		}
	}
	schedCtx, cancel := context.WithCancel(context.Background())
	b.schedulerLock.Lock()
	b.rotationQueue = q
	b.schedulerCtx, b.stopScheduler = schedCtx, cancel
	b.rotationsRunning, b.rotationsPerConfig = 0, map[string]int{}
	if b.schedulerTick > 0 {
		b.schedulerDone = make(chan struct{})
		go b.runScheduler(schedCtx, req.Storage, b.schedulerDone)
	}
	b.schedulerLock.Unlock()
	b.Logger().Debug("rotation scheduler started", "static_roles", len(names))
	return nil
}

// runScheduler starts what is due once per tick. A tick never waits for the
// work it started, so a slow upstream delays only its own roles.
func (b *backend) runScheduler(ctx context.Context, s logical.Storage, done chan struct{}) {
	defer close(done)
	ticker := time.NewTicker(b.schedulerTick)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			b.startDueRotations(s)
		}
	}
}

// startDueRotations pops the roles due now and works on each in its own
// goroutine, at most maxRotationsRunning at once and rotationsPerConfig per
// connection, so one hanging connection cannot hold every worker. Roles
// left over stay queued for the next tick.
func (b *backend) startDueRotations(s logical.Storage) {
	now := b.now().UnixMilli()
	b.schedulerLock.Lock()
	defer b.schedulerLock.Unlock()
	if b.rotationQueue == nil || b.schedulerCtx.Err() != nil {
		return
	}
	var deferred []*queue.Item
	for b.rotationQueue.Len() > 0 && b.rotationsRunning < maxRotationsRunning {
		item, err := b.rotationQueue.Pop()
		if err != nil {
			break
		}
		if item.Priority > now {
			deferred = append(deferred, item)
			break
		}
		config, _ := item.Value.(string)
		if b.rotationsPerConfig[config] >= rotationsPerConnection {
			deferred = append(deferred, item)
			continue
		}
		b.rotationsPerConfig[config]++
		b.rotationsRunning++
		b.rotations.Add(1)
		go func(name, config string) {
			defer func() {
				b.schedulerLock.Lock()
				b.rotationsPerConfig[config]--
				b.rotationsRunning--
				b.schedulerLock.Unlock()
				b.rotations.Done()
			}()
			b.processStaticRole(b.schedulerCtx, s, name)
		}(item.Key, config)
	}
	for _, item := range deferred {
		_ = b.rotationQueue.Push(item)
	}
}

// runDueRotations starts what is due and waits for it: the scheduler's
// tick, run synchronously by tests that drive the clock themselves.
func (b *backend) runDueRotations(s logical.Storage) {
	b.startDueRotations(s)
	b.rotations.Wait()
}

// processStaticRole does whatever is due for one role: end an overlap,
// rotate, or retry a failed attempt; then puts the role back in the queue.
func (b *backend) processStaticRole(ctx context.Context, s logical.Storage, name string) {
	ctx, cancel := context.WithTimeout(ctx, rotationTimeout)
	defer cancel()
	lock := b.staticRoleLock(name)
	lock.Lock()
	defer lock.Unlock()

	role, err := getStaticRole(ctx, s, name)
	if err != nil {
		b.Logger().Error("loading static role for rotation", "role", name, "error", err)
		b.requeueLater(name)
		return
	}
	if role == nil {
		return // deleted meanwhile
	}
	if err := b.endOverlapOrRotate(ctx, s, name, role, b.now()); err != nil {
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			return // shutting down; the queue is rebuilt on the next start
		}
		b.recordRotationFailure(ctx, s, name, role, err)
	}
	b.scheduleStaticRole(name, role)
}

// endOverlapOrRotate does what is due for the role at now: delete the
// previous key when its overlap has ended, then rotate (or retry a failed
// rotation) when that is due.
func (b *backend) endOverlapOrRotate(ctx context.Context, s logical.Storage, name string, role *staticRole, now time.Time) error {
	client, err := b.climatiqClient(ctx, s, role.Config)
	if err != nil {
		return err
	}
	if role.PreviousKeyID != "" && !now.Before(role.PreviousExpires) {
		if err := b.deletePreviousKey(ctx, s, name, role, client); err != nil {
			return err
		}
	}
	next := role.nextScheduledRotation()
	retrying := !role.RetryAt.IsZero()
	switch {
	case retrying && now.Before(role.RetryAt):
		return nil
	case !retrying && (next.IsZero() || now.Before(next)):
		return nil
	case !retrying && role.RotationSchedule != "" && role.RotationWindow > 0 && now.After(next.Add(role.RotationWindow)):
		// Missed the window (Vault was down): wait for the next slot.
		role.NextRotation = role.nextRotationAfter(now)
		b.Logger().Warn("static role missed its rotation window; waiting for the next scheduled time", "role", name, "next_rotation", role.NextRotation)
		return putStaticRole(ctx, s, name, role)
	}
	due := next
	if retrying {
		due = role.RetryAt
	}
	return b.rotateStaticRole(ctx, s, name, role, client, due)
}

// requeueLater puts a role back after a storage error, a little later.
func (b *backend) requeueLater(name string) {
	b.schedulerLock.Lock()
	defer b.schedulerLock.Unlock()
	if b.rotationQueue != nil {
		_, _ = b.rotationQueue.PopByKey(name)
		_ = b.rotationQueue.Push(&queue.Item{Key: name, Priority: b.now().Add(rotationBackoffMin).UnixMilli()})
	}
}

// stopRotationScheduler stops the ticker, waits for work in flight, and
// only then drops the queue that the work puts roles back into.
func (b *backend) stopRotationScheduler() {
	b.schedulerLock.Lock()
	stop, done := b.stopScheduler, b.schedulerDone
	b.stopScheduler, b.schedulerDone = nil, nil
	b.schedulerLock.Unlock()
	if stop == nil {
		return
	}
	stop()
	if done != nil {
		<-done
	}
	b.rotations.Wait()
	b.schedulerLock.Lock()
	b.rotationQueue = nil
	b.schedulerLock.Unlock()
}

// sanitizeName keeps a role name usable inside a key name.
func sanitizeName(name string) string {
	return strings.Trim(unsafeNameChars.ReplaceAllString(name, "-"), "-")
}

// nextScheduledRotation is when the key will next be rotated on its own,
// or zero for manual-only roles.
func (role *staticRole) nextScheduledRotation() time.Time {
	if role.DisableAutomatedRotation {
		return time.Time{}
	}
	return role.NextRotation
}

// nextRotationAfter computes the next scheduled rotation after t.
func (role *staticRole) nextRotationAfter(t time.Time) time.Time {
	switch {
	case role.DisableAutomatedRotation:
		return time.Time{}
	case role.RotationSchedule != "":
		sched, err := rotation.DefaultScheduler.Parse(role.RotationSchedule)
		if err != nil {
			return time.Time{} // validated on write
		}
		return sched.Next(t)
	default:
		return t.Add(role.RotationPeriod)
	}
}

// rotationInterval is the time between rotations: the period, or for a
// schedule the gap between its next two times after now.
func (role *staticRole) rotationInterval(now time.Time) time.Duration {
	if role.RotationSchedule == "" || role.DisableAutomatedRotation {
		return role.RotationPeriod
	}
	first := role.nextRotationAfter(now)
	if first.IsZero() {
		return 0
	}
	return role.nextRotationAfter(first).Sub(first)
}
