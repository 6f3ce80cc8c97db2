package carbon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiqtest"
)

func TestCleanWhileTheSchedulerTicks(t *testing.T) {
	for i := 0; i < 50; i++ {
		b := newBackend()
		b.scheduler.tick = time.Millisecond
		s := &logical.InmemStorage{}
		if err := b.Setup(context.Background(), &logical.BackendConfig{StorageView: s, System: logical.TestSystemView(), Logger: testLogger()}); err != nil {
			t.Fatal(err)
		}
		if err := b.initializeOnce(context.Background(), &logical.InitializationRequest{Storage: s}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(i%5) * time.Millisecond)
		b.clean(context.Background()) // panicked when a tick met the dropped queue
	}
}

func TestManualOnlyRoleIsNeverRotatedByTheScheduler(t *testing.T) {
	for _, tc := range []struct {
		name string
		// setup makes the role manual-only, before or after the failure.
		before, after map[string]any
	}{
		{"manual from the start", map[string]any{"disable_automated_rotation": true}, nil},
		{"switched to manual after a failed scheduled rotation", map[string]any{"rotation_period": "1h"}, map[string]any{"disable_automated_rotation": true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			clock := newFakeClock()
			e.b.clock = clock.Now
			e.writeClimatiqConfig("cq", map[string]any{"max_retries": 0})
			data := map[string]any{"config": "cq", "project_id": e.projectID}
			for k, v := range tc.before {
				data[k] = v
			}
			e.mustOK(logical.CreateOperation, "static-roles/app", data)
			held := e.staticRole("app").KeyID

			e.climatiq.FailNextMethod(http.MethodPost, 1, http.StatusInternalServerError)
			if tc.after == nil {
				if _, err := e.doErr(logical.UpdateOperation, "rotate-role/app", nil); err == nil {
					t.Fatal("rotate-role succeeded against a failing upstream")
				}
			} else {
				clock.Advance(time.Hour + time.Second)
				role := e.staticRole("app")
				if err := e.b.endOverlapOrRotate(context.Background(), e.storage, "app", role, clock.Now()); err == nil {
					t.Fatal("scheduled rotation succeeded against a failing upstream")
				}
				e.b.recordRotationFailure(context.Background(), e.storage, "app", role, errors.New("injected"), triggerSchedule)
				e.mustOK(logical.UpdateOperation, "static-roles/app", tc.after)
			}
			role := e.staticRole("app")
			if due := role.dueAt(); !due.IsZero() {
				t.Fatalf("a manual-only role is due at %s", due)
			}
			clock.Advance(24 * time.Hour)
			if err := e.b.endOverlapOrRotate(context.Background(), e.storage, "app", role, clock.Now()); err != nil {
				t.Fatal(err)
			}
			if e.staticRole("app").KeyID != held || !e.upstreamHas(held) {
				t.Fatal("the scheduler rotated a manual-only role")
			}
		})
	}
}

func TestRotationNeverCutsAPromisedOverlapShort(t *testing.T) {
	e := newTestEnv(t)
	clock := newFakeClock()
	e.b.clock = clock.Now
	e.writeClimatiqConfig("cq", nil)
	e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{
		"config": "cq", "project_id": e.projectID, "rotation_period": "1h", "overlap_period": "10m",
	})
	first := e.staticRole("app").KeyID
	e.mustOK(logical.UpdateOperation, "rotate-role/app", nil)
	clock.Advance(time.Minute)
	second := e.staticRole("app").KeyID
	e.mustOK(logical.UpdateOperation, "rotate-role/app", nil)

	role := e.staticRole("app")
	if len(role.PreviousKeys) != 2 || !e.upstreamHas(first) || !e.upstreamHas(second) {
		t.Fatalf("a rotation during an overlap cut it short: previous %v", role.PreviousKeys)
	}
	read := e.mustOK(logical.ReadOperation, "static-roles/app", nil)
	if listed := read.Data["previous_keys"].([]map[string]any); len(listed) != 2 {
		t.Fatalf("static-roles read lists %d previous keys, want 2", len(listed))
	}
	// Each goes at its own promised time.
	clock.Advance(9*time.Minute + time.Second)
	e.b.endOverlapOrRotate(context.Background(), e.storage, "app", e.staticRole("app"), clock.Now())
	if e.upstreamHas(first) || !e.upstreamHas(second) {
		t.Fatal("the first overlap did not end on time, or took the second with it")
	}
	clock.Advance(time.Minute)
	e.b.endOverlapOrRotate(context.Background(), e.storage, "app", e.staticRole("app"), clock.Now())
	if e.upstreamHas(second) {
		t.Fatal("the second overlap did not end on time")
	}

	// Only an explicit request cuts an overlap short.
	third := e.staticRole("app").KeyID
	e.mustOK(logical.UpdateOperation, "rotate-role/app", map[string]any{"delete_previous_keys": true})
	if e.upstreamHas(third) || len(e.staticRole("app").PreviousKeys) != 0 {
		t.Fatal("delete_previous_keys did not delete the replaced key at once")
	}
}

func TestAFailedOverlapEndDoesNotRotate(t *testing.T) {
	e := newTestEnv(t)
	clock := newFakeClock()
	e.b.clock = clock.Now
	e.writeClimatiqConfig("cq", map[string]any{"max_retries": 0})
	e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": "1h", "overlap_period": "5m"})
	e.mustOK(logical.UpdateOperation, "rotate-role/app", nil)
	current := e.staticRole("app").KeyID

	clock.Advance(5*time.Minute + time.Second)
	e.climatiq.FailNextMethod(http.MethodDelete, 1, http.StatusServiceUnavailable)
	if err := e.b.endOverlapOrRotate(context.Background(), e.storage, "app", e.staticRole("app"), clock.Now()); err != nil {
		t.Fatal(err)
	}
	role := e.staticRole("app")
	if role.LastError != "" || !role.RetryAt.IsZero() {
		t.Fatalf("a failed overlap-end delete was recorded as a rotation failure: %q", role.LastError)
	}
	clock.Advance(rotationBackoffMin + time.Second)
	if err := e.b.endOverlapOrRotate(context.Background(), e.storage, "app", e.staticRole("app"), clock.Now()); err != nil {
		t.Fatal(err)
	}
	if role := e.staticRole("app"); role.KeyID != current || len(role.PreviousKeys) != 0 || !e.upstreamHas(current) {
		t.Fatal("the retry of an overlap-end delete rotated the current key")
	}
}

func TestRetriesHonourTheRotationWindow(t *testing.T) {
	e := newTestEnv(t)
	clock := newFakeClock()
	start := time.Date(2026, 11, 23, 23, 30, 0, 0, time.UTC)
	clock.now = start
	e.b.clock = clock.Now
	e.writeClimatiqConfig("cq", map[string]any{"max_retries": 0})
	e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{
		"config": "cq", "project_id": e.projectID, "rotation_schedule": "0 0 * * *", "rotation_window": "1h",
	})
	held := e.staticRole("app").KeyID

	// The midnight rotation fails and keeps failing through its window.
	clock.Advance(31 * time.Minute)
	e.climatiq.SetFailureRate(1)
	for clock.Now().Before(start.Add(2 * time.Hour)) {
		role := e.staticRole("app")
		if err := e.b.endOverlapOrRotate(context.Background(), e.storage, "app", role, clock.Now()); err != nil {
			e.b.recordRotationFailure(context.Background(), e.storage, "app", role, err, triggerSchedule)
		}
		clock.Advance(rotationBackoffMax)
	}
	e.climatiq.SetFailureRate(0)
	role := e.staticRole("app")
	if !role.RetryAt.IsZero() {
		t.Fatalf("still retrying at %s, past the window", role.RetryAt)
	}
	if want := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC); !role.NextRotation.Equal(want) {
		t.Fatalf("next rotation %s, want the next slot %s", role.NextRotation, want)
	}
	// Outside the window nothing rotates, even with the upstream back.
	if err := e.b.endOverlapOrRotate(context.Background(), e.storage, "app", role, clock.Now()); err != nil {
		t.Fatal(err)
	}
	if e.staticRole("app").KeyID != held {
		t.Fatal("rotated outside the rotation window")
	}
}

func TestASlowConnectionDoesNotDelayOtherConnectionsRotations(t *testing.T) {
	e := newTestEnv(t)
	clock := e.schedulerByHand()
	e.writeClimatiqConfig("fast", nil)
	slow := climatiqtest.NewServer(testManagementKey)
	t.Cleanup(slow.Close)
	slowProject := slow.AddProject("slow").ID
	e.mustOK(logical.CreateOperation, "config/slow", map[string]any{
		"provider": "climatiq", "management_key": testManagementKey, "management_url": slow.ManagementURL(),
		"api_url": slow.APIURL(), "request_timeout": "30s", "max_retries": 0,
	})
	for i := range rotationsPerConnection + 2 {
		e.mustOK(logical.CreateOperation, fmt.Sprintf("static-roles/slow-%d", i), map[string]any{"config": "slow", "project_id": slowProject, "rotation_period": "1h"})
	}
	e.mustOK(logical.CreateOperation, "static-roles/fast", map[string]any{"config": "fast", "project_id": e.projectID, "rotation_period": "1h"})
	fastKey := e.staticRole("fast").KeyID

	slow.SetLatency(3 * time.Second)
	clock.Advance(time.Hour + time.Second)
	start := time.Now()
	e.b.startDueRotations(e.storage) // one tick: it must not wait for the slow connection
	if took := time.Since(start); took > time.Second {
		t.Fatalf("a tick waited %s for the work it started", took)
	}
	for deadline := time.Now().Add(2 * time.Second); e.staticRole("fast").KeyID == fastKey; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the fast connection's rotation waited for the slow one")
		}
	}
	slow.SetLatency(0)
	e.b.scheduler.inFlight.Wait()
}

func TestOneTickRotatesEveryDueRoleOfAConnection(t *testing.T) {
	e := newTestEnv(t)
	clock := e.schedulerByHand()
	e.writeClimatiqConfig("cq", nil)
	const roles = 5 * rotationsPerConnection
	before := map[string]string{}
	for i := range roles {
		name := fmt.Sprintf("r%02d", i)
		e.mustOK(logical.CreateOperation, "static-roles/"+name, map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": "1h"})
		before[name] = e.staticRole(name).KeyID
	}
	clock.Advance(time.Hour + time.Second)
	e.b.runDueRotations(e.storage)
	for name, key := range before {
		if e.staticRole(name).KeyID == key {
			t.Fatalf("role %s waited for a later tick: the per-connection limit held back due work", name)
		}
	}
}

// rotate-role twice within overlap_period keeps the first replaced key
// until its own overlap ends.
func TestRotatingTwiceKeepsTheFirstReplacedKeyForItsOverlap(t *testing.T) {
	e, clock := regressEnv(t)
	e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{
		"config": "cq", "project_id": e.projectID, "rotation_period": 3600, "overlap_period": 300,
	})
	first := e.mustOK(logical.ReadOperation, "static-roles/app", nil).Data["key_id"].(string)
	e.mustOK(logical.UpdateOperation, "rotate-role/app", nil)
	clock.Advance(time.Second)
	e.mustOK(logical.UpdateOperation, "rotate-role/app", nil)
	if _, found := e.climatiq.Key(first); !found {
		t.Fatalf("key %s was deleted 1s into its 5m overlap", first)
	}
}
