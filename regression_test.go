package carbon

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
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
