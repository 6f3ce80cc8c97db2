package carbon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiqtest"
)

// Regression tests for sequences that once deleted a key in use, lost one,
// or failed a caller with a 500. Each names the defect it guards against.

// pausingStorage holds a Get of one key after reading it, until released:
// the window in which a concurrent write must not be overtaken.
type pausingStorage struct {
	logical.Storage
	key     string
	reached chan struct{}
	release chan struct{}
	once    sync.Once
}

func (s *pausingStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	entry, err := s.Storage.Get(ctx, key)
	if key == s.key {
		paused := false
		s.once.Do(func() { paused = true })
		if paused {
			close(s.reached)
			<-s.release
		}
	}
	return entry, err
}

func TestRegressionDeletedRoleDoesNotKeepIssuing(t *testing.T) {
	s := &pausingStorage{Storage: &logical.InmemStorage{}, reached: make(chan struct{}), release: make(chan struct{})}
	e := newTestEnvWithStorage(t, s)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	s.key = roleStoragePrefix + "ci"

	// An issuance reads the role for the cache; the role is deleted
	// before that read is cached.
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = e.doErr(logical.ReadOperation, "creds/ci", nil)
	}()
	<-s.reached
	e.mustOK(logical.DeleteOperation, "roles/ci", nil)
	close(s.release)
	<-done

	e.mustFail(logical.ReadOperation, "creds/ci", nil, "role")
}

func TestRegressionNamesWithDoubleDotsAre400(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	for _, tc := range []struct {
		op   logical.Operation
		path string
		data map[string]any
	}{
		{logical.CreateOperation, "config/a..b", map[string]any{"provider": "climatiq", "management_key": "k"}},
		{logical.ReadOperation, "config/a..b", nil},
		{logical.CreateOperation, "roles/a..b", map[string]any{"config": "cq", "project_id": e.projectID}},
		{logical.ReadOperation, "creds/a..b", nil},
		{logical.CreateOperation, "static-roles/a..b", map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": "1h"}},
		{logical.UpdateOperation, "rotate-role/a..b", nil},
		{logical.ReadOperation, "static-creds/a..b", nil},
		{logical.CreateOperation, "roles/ok", map[string]any{"config": "a..b", "project_id": e.projectID}},
	} {
		t.Run(string(tc.op)+" "+tc.path, func(t *testing.T) {
			field := "name"
			switch {
			case strings.HasPrefix(tc.path, "creds/"):
				field = "role"
			case tc.path == "roles/ok":
				field = "config"
			}
			e.mustFail(tc.op, tc.path, tc.data, field)
		})
	}
}

func TestRegressionKeyNameTemplateIsBounded(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	for _, tmpl := range []string{
		`{{ random 50000000 }}`,
		`{{ range 1000000000 }}x{{ end }}`,
		`{{ .RoleName | replace "" "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" | replace "" "yyyyyyyyyyyyyyyyyyyyyyyyyyyy" }}`,
		`{{ define "x" }}{{ template "x" }}{{ end }}{{ template "x" }}`,
		`{{ .RoleName | base64 | base64 | base64 | base64 | base64 | base64 | base64 | base64 | base64 | base64 | base64 | base64 }}`,
	} {
		t.Run(tmpl, func(t *testing.T) {
			start := time.Now()
			e.mustFail(logical.CreateOperation, "roles/ci", map[string]any{"config": "cq", "project_id": e.projectID, "key_name_template": tmpl}, "key_name_template")
			if took := time.Since(start); took > 2*time.Second {
				t.Fatalf("refusing the template took %s", took)
			}
		})
	}
	// Bounded uses of the same functions still work.
	e.writeRole("ok", map[string]any{"config": "cq", "project_id": e.projectID,
		"key_name_template": `{{ .RoleName | replace "-" "_" }}-{{ random 8 }}-{{ if .DisplayName }}{{ .DisplayName | base64 | truncate 8 }}{{ end }}`})
	resp := e.mustOK(logical.ReadOperation, "creds/ok", nil)
	if name := resp.Data["key_name"].(string); !strings.Contains(name, "-ok-") {
		t.Fatalf("key name %q lacks the rendered role", name)
	}
}

// fakeClock is the engine's clock in tests that run hours in milliseconds.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

// schedulerByHand gives the backend a fake clock and starts its rotation
// scheduler without a ticker: the test moves the clock and runs the ticks.
func (e *testEnv) schedulerByHand() *fakeClock {
	e.t.Helper()
	clock := newFakeClock()
	e.b.clock = clock.Now
	e.b.scheduler.tick = 0
	if err := e.b.initializeOnce(context.Background(), &logical.InitializationRequest{Storage: e.storage}); err != nil {
		e.t.Fatal(err)
	}
	return clock
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestRegressionTidyKeepsRenewedLeaseKey(t *testing.T) {
	e := newTestEnv(t)
	clock := newFakeClock()
	e.b.clock = clock.Now
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID, "ttl": "30m", "max_ttl": "1h"})
	resp := e.mustOK(logical.ReadOperation, "creds/ci", nil)
	if resp.Secret.MaxTTL != time.Hour {
		t.Fatalf("lease max_ttl %s, want the recorded 1h", resp.Secret.MaxTTL)
	}
	keyID := resp.Data["key_id"].(string)

	// The operator raises max_ttl; the application renews for 5h.
	e.mustOK(logical.UpdateOperation, "roles/ci", map[string]any{"max_ttl": "10h"})
	resp.Secret.IssueTime = time.Now()
	renewed, err := e.renew(resp.Secret, 5*time.Hour)
	if err != nil || renewed.IsError() {
		t.Fatalf("renew: %v %v", renewed, err)
	}
	if renewed.Secret.TTL != 5*time.Hour {
		t.Fatalf("renewed ttl %s, want 5h", renewed.Secret.TTL)
	}

	// Past the first max_ttl and tidy's grace, the lease is still valid.
	clock.Advance(time.Hour + expiredGrace + time.Minute)
	report := e.mustOK(logical.UpdateOperation, "tidy", nil)
	if expired := report.Data["expired"].([]string); len(expired) != 0 {
		t.Fatalf("tidy took the renewed lease's key for expired: %v", expired)
	}
	if !e.upstreamHas(keyID) {
		t.Fatal("tidy deleted the key of a live, renewed lease")
	}
	// Past the renewed end and the grace, tidy does clean it up.
	clock.Advance(4*time.Hour + time.Minute)
	e.mustOK(logical.UpdateOperation, "tidy", nil)
	if e.upstreamHas(keyID) {
		t.Fatal("tidy kept a key whose lease must have ended")
	}
}

func TestRegressionTidyKeepsReleasedStaticKey(t *testing.T) {
	e := newTestEnv(t)
	clock := newFakeClock()
	e.b.clock = clock.Now
	e.writeClimatiqConfig("cq", nil)
	// A dynamic role in the same project makes tidy scan it.
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{
		"config": "cq", "project_id": e.projectID, "rotation_period": "1h", "overlap_period": "10m", "delete_key_on_remove": false,
	})
	e.mustOK(logical.UpdateOperation, "rotate-role/app", nil)
	role := e.staticRole("app")
	released := []string{role.KeyID, role.PreviousKeys[0].KeyID}
	e.mustOK(logical.DeleteOperation, "static-roles/app", nil)

	clock.Advance(2 * time.Hour)
	report := e.mustOK(logical.UpdateOperation, "tidy", nil)
	if orphans := report.Data["orphans"].([]string); len(orphans) != 0 {
		t.Fatalf("tidy took released keys for orphans: %v", orphans)
	}
	for _, id := range released {
		if !e.upstreamHas(id) {
			t.Fatalf("released key %s was deleted", id)
		}
	}
	// Adopting a released key takes it back; it is then held again.
	e.mustOK(logical.CreateOperation, "static-roles/again", map[string]any{
		"config": "cq", "project_id": e.projectID, "rotation_period": "1h", "key_id": released[0],
	})
	if ids, _ := releasedKeyIDs(context.Background(), e.storage); len(ids) != 1 || ids[0] != released[1] {
		t.Fatalf("released keys after adoption: %v, want [%s]", ids, released[1])
	}
}

func TestRegressionAdoptingAnOwnedKeyIsRefused(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	leased := e.mustOK(logical.ReadOperation, "creds/ci", nil).Data["key_id"].(string)
	e.mustOK(logical.CreateOperation, "static-roles/first", map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": "1h"})
	static := e.staticRole("first").KeyID

	for name, keyID := range map[string]string{"leased key": leased, "static key": static} {
		t.Run(name, func(t *testing.T) {
			e.mustFail(logical.CreateOperation, "static-roles/second", map[string]any{
				"config": "cq", "project_id": e.projectID, "rotation_period": "1h", "key_id": keyID,
			}, "key_id")
		})
	}
	// An unknown project is the caller's mistake: a 400, not an upstream 5xx.
	e.mustFail(logical.CreateOperation, "static-roles/third", map[string]any{"config": "cq", "project_id": "prj_nope", "rotation_period": "1h"}, "project_id")
}

func TestRegressionCleanWhileSchedulerTicks(t *testing.T) {
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

func TestRegressionConfigDeleteKeepsPendingWALRecoverable(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	stranded := e.climatiq.AddKey(e.projectID, "vault-abcdefgh-1700000000-nonce1-ci")
	if _, err := framework.PutWAL(context.Background(), e.storage, walKindClimatiqKey,
		&ownedKey{Config: "cq", Role: "ci", ProjectID: e.projectID, KeyName: stranded.Name}); err != nil {
		t.Fatal(err)
	}
	e.climatiq.FailNext(100, http.StatusServiceUnavailable) // the rollback the delete tries fails
	e.mustFail(logical.DeleteOperation, "config/cq", nil, "awaiting rollback that could not be resolved now")
	e.climatiq.FailNext(0, 0)

	runRollbackManager(t, e)
	if e.upstreamHas(stranded.ID) {
		t.Fatal("the stranded key survived its rollback")
	}
	e.mustOK(logical.DeleteOperation, "config/cq", nil)
}

func TestRegressionConfigDeleteNamesStaticRoles(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": "1h"})
	resp := e.do(logical.DeleteOperation, "config/cq", nil)
	if resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "static roles app") || strings.Contains(resp.Error().Error(), "lease") {
		t.Fatalf("config delete with a static role: %v", resp)
	}
}

func TestRegressionRepointingAConnectionWithLiveKeysIsRefused(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	e.mustOK(logical.ReadOperation, "creds/ci", nil)

	other := climatiqtest.NewServer("other-account-key")
	t.Cleanup(other.Close)
	other.AddProject("elsewhere")
	tests := []struct {
		name  string
		data  map[string]any
		field string
	}{
		{"another host without the key", map[string]any{"management_url": other.ManagementURL(), "verify_connection": false}, "management_key"},
		{"another account", map[string]any{"management_url": other.ManagementURL(), "api_url": other.APIURL(), "management_key": "other-account-key"}, "cannot see project"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.mustFail(logical.UpdateOperation, "config/cq", tc.data, tc.field)
			if st := other.Stats(); tc.field == "management_key" && st.Requests != 0 {
				t.Fatalf("the stored key was sent to the other host (%d requests)", st.Requests)
			}
		})
	}
	// A new key for the same account (rotated in the dashboard) is fine.
	e.climatiq.AddManagementKey("rotated-key")
	e.mustOK(logical.UpdateOperation, "config/cq", map[string]any{"management_key": "rotated-key"})
}

func TestRegressionManualOnlyRoleIsNeverRotatedByTheScheduler(t *testing.T) {
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

func TestRegressionRotationNeverCutsAPromisedOverlapShort(t *testing.T) {
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

func TestRegressionOverlapEndFailureDoesNotRotate(t *testing.T) {
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

func TestRegressionRetriesHonourRotationWindow(t *testing.T) {
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

func TestRegressionRotationFieldsValidatedAgainstStoredRole(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.mustOK(logical.CreateOperation, "static-roles/sched", map[string]any{"config": "cq", "project_id": e.projectID, "rotation_schedule": "0 0 * * *"})
	e.mustOK(logical.CreateOperation, "static-roles/period", map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": "1h"})
	tests := []struct {
		name, path string
		data       map[string]any
		field      string // "" for success
	}{
		{"period onto a schedule", "static-roles/sched", map[string]any{"rotation_period": "2h"}, "rotation_period"},
		{"schedule onto a period", "static-roles/period", map[string]any{"rotation_schedule": "0 1 * * *"}, "rotation_schedule"},
		{"window alone on a schedule", "static-roles/sched", map[string]any{"rotation_window": "2h"}, ""},
		{"window on a period", "static-roles/period", map[string]any{"rotation_window": "2h"}, "rotation_window"},
		{"explicit switch to a period", "static-roles/sched", map[string]any{"rotation_period": "2h", "rotation_schedule": "", "rotation_window": 0}, ""},
		{"overlap longer than a short gap of an uneven schedule", "static-roles/period",
			map[string]any{"rotation_period": 0, "rotation_schedule": "0 0,1 * * *", "overlap_period": "2h"}, "overlap_period"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.field == "" {
				e.mustOK(logical.UpdateOperation, tc.path, tc.data)
				return
			}
			e.mustFail(logical.UpdateOperation, tc.path, tc.data, tc.field)
		})
	}
	if role := e.staticRole("sched"); role.RotationSchedule != "" || role.RotationPeriod != 2*time.Hour {
		t.Fatalf("explicit switch stored schedule %q period %s", role.RotationSchedule, role.RotationPeriod)
	}
}

func TestRegressionStaticCredsTTLCountsToTheRetry(t *testing.T) {
	e := newTestEnv(t)
	clock := newFakeClock()
	e.b.clock = clock.Now
	e.writeClimatiqConfig("cq", nil)
	e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": "1h"})
	clock.Advance(time.Hour + time.Second)
	role := e.staticRole("app")
	e.b.recordRotationFailure(context.Background(), e.storage, "app", role, errors.New("upstream down"), triggerSchedule)

	creds := e.mustOK(logical.ReadOperation, "static-creds/app", nil)
	want := int64(rotationBackoffMin.Seconds())
	if ttl := creds.Data["ttl"].(int64); ttl != want {
		t.Fatalf("ttl %d while a retry is %s away, want %d", ttl, rotationBackoffMin, want)
	}
}

func TestRegressionSlowConnectionDoesNotDelayOthers(t *testing.T) {
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

func TestRegressionUpstreamFailuresAreNot500(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", map[string]any{"max_retries": 0, "request_timeout": "1s"})
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	tests := []struct {
		name   string
		inject func()
		want   int
	}{
		{"401", func() { e.climatiq.FailNext(1, http.StatusUnauthorized) }, statusBadGateway},
		{"403", func() { e.climatiq.FailNext(1, http.StatusForbidden) }, statusBadGateway},
		{"503", func() { e.climatiq.FailNext(1, http.StatusServiceUnavailable) }, statusBadGateway},
		{"timeout", func() { e.climatiq.SetLatency(2 * time.Second) }, statusGatewayTimeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.inject()
			defer e.climatiq.SetLatency(0)
			_, err := e.doErr(logical.ReadOperation, "creds/ci", nil)
			coded, ok := err.(logical.HTTPCodedError)
			if !ok || coded.Code() != tc.want {
				t.Fatalf("error %T %v, want a coded %d", err, err, tc.want)
			}
		})
	}
}

func TestRegressionOneTickRotatesEveryDueRoleOfAConnection(t *testing.T) {
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
