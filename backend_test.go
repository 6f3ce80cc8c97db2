package carbon

import (
	"context"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// TestHelpTextComplete fails when a path, operation or field lacks the help
// text that `vault path-help` and the OpenAPI document show operators.
func TestHelpTextComplete(t *testing.T) {
	b := newBackend()
	if b.Help == "" {
		t.Error("backend has no help text")
	}
	for _, p := range b.Paths {
		if p.HelpSynopsis == "" || p.HelpDescription == "" {
			t.Errorf("path %q lacks HelpSynopsis or HelpDescription", p.Pattern)
		}
		for name, f := range p.Fields {
			if strings.TrimSpace(f.Description) == "" {
				t.Errorf("path %q field %q has no description", p.Pattern, name)
			}
		}
		for op, h := range p.Operations {
			if po, ok := h.(*framework.PathOperation); ok && !po.Unpublished && po.Summary == "" {
				t.Errorf("path %q operation %s has no summary", p.Pattern, op)
			}
		}
	}
	for _, s := range b.Secrets {
		for name, f := range s.Fields {
			if f.Description == "" {
				t.Errorf("secret %q field %q has no description", s.Type, name)
			}
		}
	}
}

func TestBackendVersionAndInvalidate(t *testing.T) {
	e := newTestEnv(t)
	if e.b.RunningVersion != Version {
		t.Fatalf("RunningVersion = %q, want %q", e.b.RunningVersion, Version)
	}
	e.writeClimatiqConfig("cq", nil)
	c1, err := e.b.connection(context.Background(), e.storage, "cq")
	if err != nil || c1 == nil {
		t.Fatalf("connection: %v %v", c1, err)
	}
	c2, _ := e.b.connection(context.Background(), e.storage, "cq")
	if c1 != c2 {
		t.Fatal("connection is not cached")
	}
	e.b.invalidate(context.Background(), "config/cq")
	c3, _ := e.b.connection(context.Background(), e.storage, "cq")
	if c3 == c1 {
		t.Fatal("Invalidate did not drop the cached connection")
	}
}

// TestInitializeRetriesUntilTheSchedulerStarts: Vault only logs an error from
// Initialize, so a storage error there must not leave the mount without its
// rotation scheduler; and Clean during the retries leaves nothing running.
func TestInitializeRetriesUntilTheSchedulerStarts(t *testing.T) {
	queued := func(b *backend) int {
		b.scheduler.lock.Lock()
		defer b.scheduler.lock.Unlock()
		if b.scheduler.queue == nil {
			return -1
		}
		return b.scheduler.queue.len()
	}
	for _, tc := range []struct {
		step   string
		prefix string
	}{
		{"every step", ""},
		{"the format check", formatStorageKey},
		{"the inventory move", legacyInventoryPrefix},
		{"the queue rebuild", staticRoleStoragePrefix},
	} {
		t.Run(tc.step+" fails 3 times", func(t *testing.T) {
			e := newTestEnv(t)
			e.writeClimatiqConfig("cq", nil)
			e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": "1h"})
			e.b.initRetryDelay = 10 * time.Millisecond
			s := &unavailableStorage{Storage: e.storage, prefix: tc.prefix, failures: 3}
			if err := e.b.Initialize(context.Background(), &logical.InitializationRequest{Storage: s}); err != nil {
				t.Logf("Initialize: %v", err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for queued(e.b) != 1 {
				if time.Now().After(deadline) {
					t.Fatalf("the rotation scheduler did not start after the storage recovered (queued %d, %d storage calls)", queued(e.b), s.callCount())
				}
				time.Sleep(10 * time.Millisecond)
			}
			if format, err := getEntry[storageFormat](context.Background(), e.storage, formatStorageKey); err != nil || format == nil || format.Version != storageFormatVersion {
				t.Fatalf("format entry %+v, %v after the retries", format, err)
			}
		})
	}

	t.Run("Clean during the retries", func(t *testing.T) {
		e := newTestEnv(t)
		e.b.initRetryDelay = 10 * time.Millisecond
		s := &unavailableStorage{Storage: e.storage, failures: math.MaxInt}
		if err := e.b.Initialize(context.Background(), &logical.InitializationRequest{Storage: s}); err != nil {
			t.Logf("Initialize: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
		e.b.clean(context.Background())
		calls := s.callCount()
		time.Sleep(100 * time.Millisecond)
		if n := s.callCount() - calls; n != 0 {
			t.Fatalf("storage called %d times after Clean", n)
		}
		if queued(e.b) != -1 {
			t.Fatal("the rotation scheduler runs after Clean")
		}
		buf := make([]byte, 1<<20)
		if stacks := string(buf[:runtime.Stack(buf, true)]); strings.Contains(stacks, "retryInitialize") {
			t.Fatalf("a retry is left running after Clean:\n%s", stacks)
		}
	})
}

func TestHabitsFromOtherEngines(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", map[string]any{"verify_connection": true})
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID, "ttl": "1h"})
	e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": "1h"})

	for _, path := range []string{"rotate-root/cq", "rotate-root"} {
		resp, err := e.doErr(logical.UpdateOperation, path, nil)
		if err != nil || resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "config/") {
			t.Fatalf("%s: %v %v, want a 400 saying to write config/", path, resp, err)
		}
	}
	e.mustFail(logical.ReadOperation, "creds/app", nil, "static-creds/app")

	for _, tc := range []struct {
		path, item, field string
		want              any
	}{
		{"config/", "cq", "provider", "climatiq"},
		{"roles/", "ci", "ttl", int64(3600)},
		{"static-roles/", "app", "key_id", e.staticRole("app").KeyID},
	} {
		list := e.mustOK(logical.ListOperation, tc.path, nil)
		info, _ := list.Data["key_info"].(map[string]any)
		item, _ := info[tc.item].(map[string]any)
		if item[tc.field] != tc.want {
			t.Errorf("list -detailed %s: key_info[%s][%s] = %v, want %v", tc.path, tc.item, tc.field, item[tc.field], tc.want)
		}
	}
	if cfg := e.mustOK(logical.ReadOperation, "config/cq", nil); cfg.Data["verify_connection"] != true {
		t.Fatalf("config read lacks verify_connection: %v", cfg.Data)
	}
}
