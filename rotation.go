package carbon

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/sync/errgroup"

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
	// on the upstream's latency once rather than once each. A connection
	// gets a quarter of the workers, so a hanging one delays only its own
	// roles; 16 keep up with 10,000 roles on one connection falling due
	// at 700 a second (BENCHMARKS.md, section 4), where 4 fell behind.
	maxRotationsRunning    = 64
	rotationsPerConnection = 16

	rotationBackoffMin = 5 * time.Second
	rotationBackoffMax = 5 * time.Minute
	rotationTimeout    = 2 * time.Minute
)

// rotationScheduler is the state of the scheduler of static roles' rotations
// on the node that rotates; queue is nil where this node does not rotate
// (standbys, DR and performance secondaries).
type rotationScheduler struct {
	tick time.Duration // 0 starts no ticker: tests run ticks themselves

	lock      sync.Mutex // guards what follows
	queue     *rotationQueues
	ctx       context.Context // the scheduler's life, cancelled by stop
	stop      context.CancelFunc
	done      chan struct{}  // closed when the ticker's goroutine ends
	running   int            // rotations in flight
	perConfig map[string]int // rotations in flight per connection

	inFlight sync.WaitGroup // the rotations' goroutines
}

// rotateStaticRole replaces the role's key. Order: WAL, create the new key,
// record it (inventory, then the role, now listing the old key among its
// previous keys), drop the WAL, then delete the old key now or when its
// overlap ends. A crash before the role is stored leaves the old key in
// charge and the WAL deletes the new one; after, the new key is in charge
// and the old one is deleted on time by the scheduler.
//
// A rotation never cuts a promised overlap short: keys still in their
// overlap stay until their own time, unless the operator asked for them to
// go at once (deletePrevious, rotate-role's delete_previous_keys).
//
// The event reports what triggered the rotation and, for a scheduled one,
// how late it ran.
func (b *backend) rotateStaticRole(ctx context.Context, s logical.Storage, in rotationInput) error {
	name, role := in.name, in.role
	started := b.now()
	oldKeyID := role.KeyID
	if err := b.replaceStaticKey(ctx, s, name, role, in.client); err != nil {
		return err
	}
	now := b.now()
	if in.deletePrevious {
		for i := range role.PreviousKeys {
			role.PreviousKeys[i].Expires = now
		}
	}
	// Best effort now: a key that cannot be deleted stays listed with its
	// own retry time, which never causes another rotation.
	b.deleteEndedPreviousKeys(ctx, s, name, role, in.client, now)

	args := []string{"role", name, "key_id", role.KeyID, "previous_key_id", oldKeyID, "trigger", string(in.trigger)}
	if in.trigger == triggerSchedule {
		args = append(args, "lateness_ms", strconv.FormatInt(started.Sub(in.due).Milliseconds(), 10))
	}
	b.logAndEmit(eventStaticRotate, args...)
	return nil
}

// rotationInput is what one rotation of a static role needs.
type rotationInput struct {
	name   string
	role   *staticRole // rotated in place, and stored
	client *climatiq.Client
	// trigger is why it rotates; due, for a scheduled rotation, is when the
	// scheduler wanted it.
	trigger rotationTrigger
	due     time.Time
	// deletePrevious deletes every replaced key at once instead of at the
	// end of its overlap (rotate-role's delete_previous_keys).
	deletePrevious bool
}

// rotationTrigger says why a static role rotates, in events and metrics.
type rotationTrigger string

const (
	triggerSchedule rotationTrigger = "schedule" // its rotation_period or rotation_schedule, or a retry of a failed one
	triggerManual   rotationTrigger = "manual"   // rotate-role
	triggerHeal     rotationTrigger = "heal"     // its key was found gone upstream (static_key_check.go)
)

// replaceStaticKey creates a new key under a WAL entry and stores it as the
// role's current key, in the same write that lists the key it replaces (if
// any) among the previous keys, so no key is ever held by the inventory
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
		b.dropWALAfterRollback(ctx, s, walID, key, err)
		return upstreamError("creating key", err)
	}
	key.KeyID = created.ID

	previous := role.clone()
	if role.KeyID != "" {
		role.PreviousKeys = append(role.PreviousKeys, previousKey{
			KeyID: role.KeyID, KeyName: role.KeyName, Expires: now.Add(role.OverlapPeriod).UTC(),
		})
	}
	role.KeyID, role.KeyName, role.KeyValue = created.ID, keyName, created.Key
	role.LastRotated = now
	role.NextRotation = role.nextRotationAfter(now)
	role.clearRotationFailure()
	err = b.recordKey(ctx, s, key, nil)
	if err == nil {
		err = putStaticRole(ctx, s, name, role)
	}
	if err != nil {
		*role = *previous
		b.dropWALAfterRollback(ctx, s, walID, key, nil)
		return fmt.Errorf("recording the new key: %w", err)
	}
	// The role holds the key now: the entry is spent (a stop before it is
	// gone leaves it to the rollback manager, which finds the key held).
	b.retireWAL(ctx, s, walID)
	b.staticKeyChecks.markVerified(name, created.ID) // just made: no need to look
	return nil
}

// deleteEndedPreviousKeys deletes the previous keys whose overlap has ended
// by now (already gone counts) and forgets them. A key whose delete fails
// stays listed with its own back-off; that failure is the key's, not a
// rotation's, so it never brings a rotation forward.
func (b *backend) deleteEndedPreviousKeys(ctx context.Context, s logical.Storage, name string, role *staticRole, client *climatiq.Client, now time.Time) {
	kept := role.PreviousKeys[:0:0]
	changed := false
	for _, pk := range role.PreviousKeys {
		if now.Before(pk.deleteDue()) {
			kept = append(kept, pk)
			continue
		}
		changed = true
		key := role.ownedKey(name, pk.KeyID, pk.KeyName, time.Time{})
		err := deleteUpstream(ctx, client, key)
		if err == nil {
			err = b.forgetKey(ctx, s, key)
		}
		if err != nil {
			pk.deleteFailed(now, err)
			b.Logger().Warn("deleting a replaced static key failed; will retry", "role", name, "key_id", pk.KeyID,
				"attempt", pk.DeleteAttempts, "retry_at", pk.DeleteRetryAt, "error", err)
			kept = append(kept, pk)
			continue
		}
		b.logAndEmit(eventStaticDelete, "role", name, "key_id", pk.KeyID)
	}
	if !changed {
		return
	}
	role.PreviousKeys = kept
	if err := putStaticRole(ctx, s, name, role); err != nil {
		// The keys stay listed in storage and are deleted again later;
		// deleting an already deleted key succeeds.
		b.Logger().Error("storing the static role after deleting replaced keys", "role", name, "error", err)
	}
}

// recordRotationFailure stores the error of a rotation. The engine's own
// (scheduled, or healing a key gone upstream) are retried with exponential
// back-off; a manual one is not: its caller got the error, and a
// manual-only role must never rotate by itself.
func (b *backend) recordRotationFailure(ctx context.Context, s logical.Storage, name string, role *staticRole, cause error, trigger rotationTrigger) {
	now := b.now()
	b.metrics.rotations.WithLabelValues(name, string(trigger), "failed").Inc()
	role.LastError, role.LastErrorTime = cause.Error(), now
	if trigger != triggerManual { // the engine's own rotations retry with a back-off
		role.FailedAttempts++
		role.RetryAt = now.Add(backoff(role.FailedAttempts))
		b.Logger().Warn("static role rotation failed; will retry", "role", name, "attempt", role.FailedAttempts, "retry_at", role.RetryAt, "error", cause)
	} else {
		b.Logger().Warn("static role rotation on request failed", "role", name, "error", cause)
	}
	if err := putStaticRole(ctx, s, name, role); err != nil {
		b.Logger().Error("storing rotation failure", "role", name, "error", err)
	}
}

// scheduleStaticRole (re)places the role in the rotation queue, or takes
// it out when nothing is ever due.
func (b *backend) scheduleStaticRole(name string, role *staticRole) {
	b.scheduler.lock.Lock()
	defer b.scheduler.lock.Unlock()
	if b.scheduler.queue == nil {
		return // not the node that rotates
	}
	if due := role.dueAt(); due.IsZero() {
		b.scheduler.queue.remove(name)
	} else {
		b.scheduler.queue.put(name, role.Config, due)
	}
}

func (b *backend) unscheduleStaticRole(name string) {
	b.scheduler.lock.Lock()
	defer b.scheduler.lock.Unlock()
	if b.scheduler.queue != nil {
		b.scheduler.queue.remove(name)
	}
}

// startRotationScheduler rebuilds the queue from storage, so rotations
// missed while Vault was down run at once, and starts the ticker.
func (b *backend) startRotationScheduler(ctx context.Context, s logical.Storage) error {
	began := time.Now()
	names, err := s.List(ctx, staticRoleStoragePrefix)
	if err != nil {
		return err
	}
	roles, err := loadStaticRoles(ctx, s, names)
	if err != nil {
		return err
	}
	q := newRotationQueues()
	for i, role := range roles {
		if role == nil {
			continue
		}
		if due := role.dueAt(); !due.IsZero() {
			q.put(names[i], role.Config, due)
		}
	}
	schedCtx, cancel := context.WithCancel(context.Background())
	b.scheduler.lock.Lock()
	b.scheduler.queue = q
	b.scheduler.ctx, b.scheduler.stop = schedCtx, cancel
	b.scheduler.running, b.scheduler.perConfig = 0, map[string]int{}
	if b.scheduler.tick > 0 {
		b.scheduler.done = make(chan struct{})
		go b.runScheduler(schedCtx, s, b.scheduler.done)
	}
	b.scheduler.lock.Unlock()
	b.Logger().Info("rotation scheduler started", "static_roles", len(names), "scheduled", q.len(),
		"took", time.Since(began).Round(time.Millisecond).String())
	return nil
}

// roleLoaders bounds the parallel storage reads that rebuild the queue:
// each read of an external plugin is a round trip to Vault, so thousands of
// roles read one after another would hold initialize for seconds.
const roleLoaders = 16

// loadStaticRoles reads the static roles named, in parallel, in the order
// of names (nil for one deleted meanwhile).
func loadStaticRoles(ctx context.Context, s logical.Storage, names []string) ([]*staticRole, error) {
	roles := make([]*staticRole, len(names))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(roleLoaders)
	for i, name := range names {
		g.Go(func() (err error) {
			roles[i], err = getStaticRole(ctx, s, name)
			return err
		})
	}
	return roles, g.Wait()
}

// runScheduler starts what is due once per tick. A tick never waits for the
// work it started, so a slow upstream delays only its own roles.
func (b *backend) runScheduler(ctx context.Context, s logical.Storage, done chan struct{}) {
	defer close(done)
	ticker := time.NewTicker(b.scheduler.tick)
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
// goroutine, at most maxRotationsRunning at once and rotationsPerConnection
// per connection, so one hanging connection cannot hold every worker. Roles
// left over stay queued until a place frees up or the next tick.
func (b *backend) startDueRotations(s logical.Storage) {
	now := b.now()
	b.scheduler.lock.Lock()
	defer b.scheduler.lock.Unlock()
	if b.scheduler.queue == nil || b.scheduler.ctx.Err() != nil {
		return
	}
	ctx := b.scheduler.ctx // read under the lock: a restart of the scheduler replaces it
	for _, config := range b.scheduler.queue.configs() {
		for b.scheduler.running < maxRotationsRunning && b.scheduler.perConfig[config] < rotationsPerConnection {
			name, due := b.scheduler.queue.popDue(config, now)
			if !due {
				break
			}
			b.scheduler.perConfig[config]++
			b.scheduler.running++
			b.scheduler.inFlight.Add(1)
			go func() {
				defer b.scheduler.inFlight.Done()
				b.processStaticRole(ctx, s, name, config)
				b.scheduler.lock.Lock()
				b.scheduler.perConfig[config]--
				b.scheduler.running--
				b.scheduler.lock.Unlock()
				// A freed place goes to the next due role at once rather
				// than at the next tick: a burst of due roles on one
				// connection runs back to back, rotationsPerConnection at
				// a time.
				b.startDueRotations(s)
			}()
		}
	}
}

// runDueRotations starts what is due and waits for it: the scheduler's
// tick, run synchronously by tests that drive the clock themselves.
func (b *backend) runDueRotations(s logical.Storage) {
	b.startDueRotations(s)
	b.scheduler.inFlight.Wait()
}

// processStaticRole does whatever is due for one role: end an overlap,
// rotate, or retry a failed attempt; then puts the role back in the queue.
func (b *backend) processStaticRole(ctx context.Context, s logical.Storage, name, config string) {
	ctx, cancel := context.WithTimeout(ctx, rotationTimeout)
	defer cancel()
	lock := b.staticRoleLock(name)
	lock.Lock()
	defer lock.Unlock()

	role, err := getStaticRole(ctx, s, name)
	if err != nil {
		b.Logger().Error("loading static role for rotation", "role", name, "error", err)
		b.requeueLater(name, config)
		return
	}
	if role == nil {
		return // deleted meanwhile
	}
	if err := b.endOverlapOrRotate(ctx, s, name, role, b.now()); err != nil {
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			return // shutting down; the queue is rebuilt on the next start
		}
		if errors.Is(err, errMissedWindowNotStored) {
			// Nothing was tried, so nothing is retried: a retry would
			// rotate outside the window. The stored role still says the
			// window was missed; look again a little later.
			b.Logger().Error("storing the next rotation time after a missed window", "role", name, "error", err)
			b.requeueLater(name, config)
			return
		}
		b.recordRotationFailure(ctx, s, name, role, err, triggerSchedule)
	}
	b.scheduleStaticRole(name, role)
}

// endOverlapOrRotate does what is due for the role at now: delete the
// previous keys whose overlap has ended, then rotate (or retry a failed
// scheduled rotation) when that is due. It returns only rotation errors.
func (b *backend) endOverlapOrRotate(ctx context.Context, s logical.Storage, name string, role *staticRole, now time.Time) error {
	client, err := b.climatiqClient(ctx, s, role.Config)
	if err != nil {
		// The ended overlaps cannot be ended either: they back off like
		// failed deletes, or they would stay due and the scheduler would
		// take the role again at once, and again.
		for i := range role.PreviousKeys {
			if pk := &role.PreviousKeys[i]; !now.Before(pk.deleteDue()) {
				pk.deleteFailed(now, err)
			}
		}
		return err
	}
	b.deleteEndedPreviousKeys(ctx, s, name, role, client, now)

	attempt := role.nextRotationAttempt()
	if attempt.IsZero() || now.Before(attempt) {
		return nil
	}
	// A scheduled rotation, first try or retry, runs only within its
	// window; past it, the rotation waits for the next scheduled time.
	if role.RotationSchedule != "" && role.RotationWindow > 0 && now.After(role.NextRotation.Add(role.RotationWindow)) {
		missed := role.NextRotation
		role.NextRotation = role.nextRotationAfter(now)
		if !role.RetryAt.IsZero() {
			role.LastError = fmt.Sprintf("%s; gave up retrying at the end of the rotation window (%s after %s)",
				role.LastError, role.RotationWindow, formatTime(missed))
			role.FailedAttempts, role.RetryAt = 0, time.Time{}
		}
		b.Logger().Warn("static role missed its rotation window; waiting for the next scheduled time",
			"role", name, "missed", missed, "next_rotation", role.NextRotation)
		if err := putStaticRole(ctx, s, name, role); err != nil {
			return fmt.Errorf("%w: %w", errMissedWindowNotStored, err)
		}
		return nil
	}
	return b.rotateStaticRole(ctx, s, rotationInput{name: name, role: role, client: client, trigger: triggerSchedule, due: attempt})
}

// errMissedWindowNotStored: a role past its rotation window could not be
// moved to its next scheduled time. It is no failed rotation.
var errMissedWindowNotStored = errors.New("storing the next rotation time after a missed window")

// requeueLater puts a role back after a storage error, a little later,
// still counted against its connection's limit.
func (b *backend) requeueLater(name, config string) {
	b.scheduler.lock.Lock()
	defer b.scheduler.lock.Unlock()
	if b.scheduler.queue != nil {
		b.scheduler.queue.put(name, config, b.now().Add(rotationBackoffMin))
	}
}

// stopRotationScheduler stops the ticker, waits for work in flight, and
// only then drops the queue that the work puts roles back into.
func (b *backend) stopRotationScheduler() {
	b.scheduler.lock.Lock()
	stop, done := b.scheduler.stop, b.scheduler.done
	b.scheduler.stop, b.scheduler.done = nil, nil
	b.scheduler.lock.Unlock()
	if stop == nil {
		return
	}
	stop()
	if done != nil {
		<-done
	}
	b.scheduler.inFlight.Wait()
	b.scheduler.lock.Lock()
	b.scheduler.queue = nil
	b.scheduler.lock.Unlock()
}
