package carbon

import (
	"context"
	"errors"
	"math"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/logging"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/altruistiqtest"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiqtest"
)

const (
	testManagementKey = "mgmt-key-s3cr3t-value"
	testClientID      = "atq-client-id"
	testClientSecret  = "atq-client-s3cr3t-value"
)

// testEnv is a backend on in-memory storage with both fake upstreams.
type testEnv struct {
	t          testing.TB
	b          *backend
	storage    logical.Storage
	climatiq   *climatiqtest.Server
	altruistiq *altruistiqtest.Server
	projectID  string
}

func newTestEnv(t testing.TB) *testEnv {
	t.Helper()
	return newTestEnvWithStorage(t, &logical.InmemStorage{})
}

func newTestEnvWithStorage(t testing.TB, s logical.Storage) *testEnv {
	t.Helper()
	conf := logical.TestBackendConfig()
	conf.StorageView = s
	// Trace logs of every upstream call drown test failures; set
	// CARBON_TEST_LOG=trace to see them.
	conf.Logger = logging.NewVaultLogger(hclog.LevelFromString(envOr("CARBON_TEST_LOG", "warn")))
	raw, err := Factory(context.Background(), conf)
	if err != nil {
		t.Fatal(err)
	}
	b := raw.(*backend)
	t.Cleanup(func() { b.clean(context.Background()) })

	cq := climatiqtest.NewServer(testManagementKey)
	t.Cleanup(cq.Close)
	aq := altruistiqtest.NewServer(testClientID, testClientSecret)
	t.Cleanup(aq.Close)

	return &testEnv{
		t: t, b: b, storage: s, climatiq: cq, altruistiq: aq,
		projectID: cq.AddProject("vault-tests").ID,
	}
}

// do runs one request against the backend and fails the test on a Go error
// (which Vault would report as a 500).
func (e *testEnv) do(op logical.Operation, path string, data map[string]any) *logical.Response {
	e.t.Helper()
	resp, err := e.doErr(op, path, data)
	if err != nil {
		e.t.Fatalf("%s %s: unexpected error: %v", op, path, err)
	}
	return resp
}

func (e *testEnv) doErr(op logical.Operation, path string, data map[string]any) (*logical.Response, error) {
	req := &logical.Request{
		Operation:   op,
		Path:        path,
		Data:        data,
		Storage:     e.storage,
		DisplayName: "token-tester",
	}
	if op == logical.CreateOperation || op == logical.UpdateOperation {
		// Let the existence check pick create or update, as Vault does.
		if ok, exists, err := e.b.HandleExistenceCheck(context.Background(), req); err == nil && ok {
			req.Operation = logical.UpdateOperation
			if !exists {
				req.Operation = logical.CreateOperation
			}
		}
	}
	resp, err := e.b.HandleRequest(context.Background(), req)
	if path == "tidy" {
		// A run that outlives its answer (a 202) goes on in the
		// background; tests look at the mount once it has ended.
		e.b.waitTidy()
	}
	return resp, err
}

// mustOK fails unless the response is a success.
func (e *testEnv) mustOK(op logical.Operation, path string, data map[string]any) *logical.Response {
	e.t.Helper()
	resp := e.do(op, path, data)
	if resp != nil && resp.IsError() {
		e.t.Fatalf("%s %s: unexpected error response: %v", op, path, resp.Error())
	}
	return resp
}

// mustFail fails unless the response is a 4xx-style error naming field.
func (e *testEnv) mustFail(op logical.Operation, path string, data map[string]any, field string) {
	e.t.Helper()
	resp := e.do(op, path, data)
	if resp == nil || !resp.IsError() {
		e.t.Fatalf("%s %s: expected an error naming %q, got %#v", op, path, field, resp)
	}
	if msg := resp.Error().Error(); !strings.Contains(msg, field) {
		e.t.Fatalf("%s %s: error %q does not name field %q", op, path, msg, field)
	}
}

func (e *testEnv) writeClimatiqConfig(name string, extra map[string]any) {
	e.t.Helper()
	data := map[string]any{
		"provider":       "climatiq",
		"management_key": testManagementKey,
		"management_url": e.climatiq.ManagementURL(),
		"api_url":        e.climatiq.APIURL(),
		"max_retries":    1,
	}
	for k, v := range extra {
		data[k] = v
	}
	e.mustOK(logical.CreateOperation, "config/"+name, data)
}

func (e *testEnv) writeAltruistiqConfig(name string, extra map[string]any) {
	e.t.Helper()
	data := map[string]any{
		"provider":      "altruistiq",
		"client_id":     testClientID,
		"client_secret": testClientSecret,
		"token_url":     e.altruistiq.TokenURL(),
		"api_url":       e.altruistiq.APIURL(),
	}
	for k, v := range extra {
		data[k] = v
	}
	e.mustOK(logical.CreateOperation, "config/"+name, data)
}

func (e *testEnv) writeRole(name string, data map[string]any) {
	e.t.Helper()
	e.mustOK(logical.CreateOperation, "roles/"+name, data)
}

// revoke and renew drive a lease the way Vault's expiration manager does.
func (e *testEnv) revoke(secret *logical.Secret) (*logical.Response, error) {
	return e.b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.RevokeOperation,
		Storage:   e.storage,
		Secret:    secret,
	})
}

func (e *testEnv) renew(secret *logical.Secret, increment time.Duration) (*logical.Response, error) {
	s := *secret
	s.Increment = increment
	return e.b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.RenewOperation,
		Storage:   e.storage,
		Secret:    &s,
	})
}

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

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

// unavailableStorage fails Get, List and Put, the calls initialize makes,
// of keys under prefix while failures are left.
type unavailableStorage struct {
	logical.Storage
	prefix   string
	mu       sync.Mutex
	failures int
	calls    int
}

func (s *unavailableStorage) fail(key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.failures > 0 && strings.HasPrefix(key, s.prefix) {
		s.failures--
		return errors.New("storage unavailable")
	}
	return nil
}

func (s *unavailableStorage) callCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func (s *unavailableStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	if err := s.fail(key); err != nil {
		return nil, err
	}
	return s.Storage.Get(ctx, key)
}

func (s *unavailableStorage) List(ctx context.Context, prefix string) ([]string, error) {
	if err := s.fail(prefix); err != nil {
		return nil, err
	}
	return s.Storage.List(ctx, prefix)
}

func (s *unavailableStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	if err := s.fail(e.Key); err != nil {
		return err
	}
	return s.Storage.Put(ctx, e)
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
