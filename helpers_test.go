package carbon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/errutil"
	"github.com/hashicorp/vault/sdk/helper/logging"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/altruistiqtest"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiqtest"
)

// TestMain has revocations give up on a failing upstream after one try of
// the client, as before deleteUpstreamPersistently: the state machine and
// the fault tests fail deletes on purpose and judge each revocation by its
// outcome, and 30 s of retries per failing delete would swamp their budget.
// The tests of the retries set revokeRetryFor themselves.
func TestMain(m *testing.M) {
	revokeRetryFor = 0
	os.Exit(m.Run())
}

// errInjected is the failure hookStorage injects.
var errInjected = errors.New("injected storage failure")

// hookStorage runs a hook before every storage call, which may fail the
// call (a failed write, a stop) or do something in between two writes of
// a request (a tidy, a renewal, a count). Hooks run outside any lock of
// the storage.
type hookStorage struct {
	logical.Storage
	mu   sync.Mutex
	hook func(op, key string) error
}

func newHookStorage() *hookStorage { return &hookStorage{Storage: &logical.InmemStorage{}} }

// setHook replaces the hook; nil removes it.
func (s *hookStorage) setHook(hook func(op, key string) error) {
	s.mu.Lock()
	s.hook = hook
	s.mu.Unlock()
}

func (s *hookStorage) before(op, key string) error {
	s.mu.Lock()
	hook := s.hook
	s.mu.Unlock()
	if hook == nil {
		return nil
	}
	return hook(op, key)
}

func (s *hookStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	if err := s.before("get", key); err != nil {
		return nil, err
	}
	return s.Storage.Get(ctx, key)
}

func (s *hookStorage) List(ctx context.Context, prefix string) ([]string, error) {
	if err := s.before("list", prefix); err != nil {
		return nil, err
	}
	return s.Storage.List(ctx, prefix)
}

func (s *hookStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	if err := s.before("put", e.Key); err != nil {
		return err
	}
	return s.Storage.Put(ctx, e)
}

func (s *hookStorage) Delete(ctx context.Context, key string) error {
	if err := s.before("delete", key); err != nil {
		return err
	}
	return s.Storage.Delete(ctx, key)
}

// failOnce fails the first call of op on a key with the prefix.
func failOnce(op, prefix string) func(string, string) error {
	var once sync.Once
	return func(o, key string) error {
		var err error
		if o == op && strings.HasPrefix(key, prefix) {
			once.Do(func() { err = errInjected })
		}
		return err
	}
}

// failAlways fails every call of op on a key with the prefix.
func failAlways(op, prefix string) func(string, string) error {
	return func(o, key string) error {
		if o == op && strings.HasPrefix(key, prefix) {
			return errInjected
		}
		return nil
	}
}

// writeCounter counts storage writes (puts and deletes) per key prefix.
type writeCounter struct {
	mu     sync.Mutex
	writes map[string]int
}

func (c *writeCounter) hook(op, key string) error {
	if op == "put" || op == "delete" {
		c.mu.Lock()
		if c.writes == nil {
			c.writes = map[string]int{}
		}
		prefix, _, _ := strings.Cut(key, "/")
		c.writes[prefix+"/"]++
		c.mu.Unlock()
	}
	return nil
}

func (c *writeCounter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, w := range c.writes {
		n += w
	}
	return n
}

func (c *writeCounter) reset() {
	c.mu.Lock()
	c.writes = nil
	c.mu.Unlock()
}

// reload starts a fresh backend instance on the same storage, as a plugin
// reload or restart does, and returns the old one, still running: the
// caller decides when it is cleaned. The new instance started after every
// WAL entry written so far.
func (e *testEnv) reload() *backend {
	e.t.Helper()
	conf := &logical.BackendConfig{StorageView: e.storage, System: logical.TestSystemView(), Logger: testLogger()}
	raw, err := Factory(context.Background(), conf)
	if err != nil {
		e.t.Fatal(err)
	}
	fresh := raw.(*backend)
	fresh.scheduler.tick = 0
	fresh.startedAt = time.Now().Add(2 * time.Second)
	e.t.Cleanup(func() { fresh.clean(context.Background()) })
	old := e.b
	e.b = fresh
	return old
}

// newStaticRoleEnv is a backend on hook storage with connection cq and
// static role app (rotation_period 1h, overridden or added to by extra);
// it returns the role's key id.
func newStaticRoleEnv(t *testing.T, extra map[string]any) (*hookStorage, *testEnv, string) {
	t.Helper()
	s := newHookStorage()
	e := newTestEnvWithStorage(t, s)
	e.writeClimatiqConfig("cq", nil)
	data := map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": "1h"}
	maps.Copy(data, extra)
	e.mustOK(logical.CreateOperation, "static-roles/app", data)
	return s, e, e.staticRole("app").KeyID
}

// failEither fails every call that one of the hooks fails.
func failEither(hooks ...func(string, string) error) func(string, string) error {
	return func(op, key string) error {
		for _, hook := range hooks {
			if err := hook(op, key); err != nil {
				return err
			}
		}
		return nil
	}
}

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

// regressEnv is a testEnv on storage that refuses "..", as Vault's does,
// with a fake clock.
func regressEnv(t *testing.T) (*testEnv, *fakeClock) {
	t.Helper()
	e := newTestEnvWithStorage(t, vaultStorage{&logical.InmemStorage{}})
	clock := &fakeClock{now: time.Now().UTC().Truncate(time.Second)}
	e.b.clock = clock.Now
	e.b.scheduler.tick = 0
	if err := e.b.initializeOnce(context.Background(), &logical.InitializationRequest{Storage: e.storage}); err != nil {
		t.Fatal(err)
	}
	e.writeClimatiqConfig("cq", map[string]any{"request_timeout": 1})
	return e, clock
}

// vaultStatusOf is the HTTP status Vault would answer.
func vaultStatusOf(e *testEnv, op logical.Operation, path string, data map[string]any) (int, *logical.Response, error) {
	if op == logical.CreateOperation || op == logical.UpdateOperation {
		// Vault runs the existence check first and answers its failure
		// with a 500 (a 400 for a field that does not parse).
		req := &logical.Request{Operation: op, Path: path, Data: data, Storage: e.storage}
		if _, _, err := e.b.HandleExistenceCheck(context.Background(), req); err != nil && !errors.Is(err, logical.ErrUnsupportedPath) {
			if _, ok := err.(errutil.UserError); ok {
				return http.StatusBadRequest, nil, err
			}
			return http.StatusInternalServerError, nil, err
		}
	}
	resp, err := e.doErr(op, path, data)
	switch {
	case err != nil:
		if _, ok := err.(errutil.UserError); ok {
			return http.StatusBadRequest, resp, err
		}
		status, _ := logical.RespondErrorCommon(&logical.Request{Operation: op, Path: path}, resp, err)
		if status == 0 {
			status = http.StatusInternalServerError
		}
		return status, resp, err
	case resp != nil && resp.IsError():
		return http.StatusBadRequest, resp, nil
	}
	return 0, resp, nil
}

func testLogger() hclog.Logger { return logging.NewVaultLogger(hclog.Warn) }

func assertInventory(t *testing.T, e *testEnv, role, keyName string, want bool) {
	t.Helper()
	got := inventoryByName(t, e, keyKindDynamic, role, keyName)
	if (got != nil) != want {
		t.Fatalf("inventory entry for key %s present=%v, want %v", keyName, got != nil, want)
	}
}

func assertNoWAL(t *testing.T, e *testEnv) {
	t.Helper()
	waitSpentWALRetired(t, e)
}

// waitSpentWALRetired closes the instance's issuance blocks, waits
// (bounded) for the background deletion of their WAL entries, then asserts
// none is left: every issuance has resolved what it created.
func waitSpentWALRetired(t *testing.T, e *testEnv) {
	t.Helper()
	e.b.closeBlocks(context.Background(), "")
	var ids []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		var err error
		if ids, err = framework.ListWAL(context.Background(), e.storage); err != nil {
			t.Fatal(err)
		}
		if len(ids) == 0 {
			return
		}
	}
	t.Fatalf("%d WAL entries left", len(ids))
}

// runRollbackManager runs the framework's WAL rollback as Vault's rollback
// manager does, ignoring the entries' minimum age.
func runRollbackManager(t *testing.T, e *testEnv) {
	t.Helper()
	if _, err := e.b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.RollbackOperation,
		Storage:   e.storage,
		Data:      map[string]any{"immediate": true},
	}); err != nil {
		t.Fatal(err)
	}
}

// inventoryByName finds an inventory entry by role and key name, by walking.
func inventoryByName(t *testing.T, e *testEnv, kind, role, keyName string) *ownedKey {
	t.Helper()
	var found *ownedKey
	err := walkKeys(context.Background(), e.storage, func(k *ownedKey) error {
		if k.kind() == kind && k.Role == role && k.KeyName == keyName {
			found = k
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// countInventory counts a role's entries by walking the inventory.
func countInventory(ctx context.Context, s logical.Storage, kind, role string) (int, error) {
	n := 0
	err := walkKeys(ctx, s, func(k *ownedKey) error {
		if k.kind() == kind && k.Role == role {
			n++
		}
		return nil
	})
	return n, err
}

// startTidy sends a tidy that must outlast the answer wait, without waiting
// for its run as the other tests' requests do: its 202 carries the
// response (data and warnings) in its body, as Vault sends it.
func startTidy(t *testing.T, e *testEnv, data map[string]any) *logical.Response {
	t.Helper()
	resp, err := e.b.HandleRequest(context.Background(), &logical.Request{Operation: logical.UpdateOperation, Path: "tidy",
		Storage: e.storage, Data: data, MountPoint: "carbon/"})
	if err != nil || resp == nil || resp.Data[logical.HTTPStatusCode] != statusAccepted {
		t.Fatalf("tidy of a slow connection: %v, %v; want a 202", resp, err)
	}
	var body struct {
		Data     map[string]any `json:"data"`
		Warnings []string       `json:"warnings"`
	}
	if err := json.Unmarshal([]byte(resp.Data[logical.HTTPRawBody].(string)), &body); err != nil {
		t.Fatalf("the 202's body: %v", err)
	}
	if len(body.Warnings) != 1 || !strings.Contains(body.Warnings[0], "carbon/tidy-status") {
		t.Fatalf("the 202 warns %q, want it to point at tidy-status", body.Warnings)
	}
	return &logical.Response{Data: body.Data, Warnings: body.Warnings}
}

// slowConnection is a second Climatiq connection, on its own fake, whose
// role makes tidy scan one of its projects; every management answer comes
// latency late once the connection is written.
func slowConnection(t *testing.T, e *testEnv, name string, latency time.Duration) *climatiqtest.Server {
	t.Helper()
	slow := climatiqtest.NewServer(testManagementKey)
	t.Cleanup(slow.Close)
	e.mustOK(logical.CreateOperation, "config/"+name, map[string]any{"provider": "climatiq", "management_key": testManagementKey,
		"management_url": slow.ManagementURL(), "api_url": slow.APIURL(), "max_retries": 0, "request_timeout": "30s"})
	e.writeRole(name+"-role", map[string]any{"config": name, "project_id": slow.AddProject("slow").ID})
	slow.SetLatency(latency)
	return slow
}

// markedName is a key name of this mount made at created.
func markedName(t *testing.T, e *testEnv, created time.Time, nonce string) string {
	t.Helper()
	marker, err := e.b.mountMarker(context.Background(), e.storage)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("vault-%s-%d-%s-x", marker, created.Unix(), nonce)
}

func (e *testEnv) staticRole(name string) *staticRole {
	e.t.Helper()
	role, err := getStaticRole(context.Background(), e.storage, name)
	if err != nil || role == nil {
		e.t.Fatalf("static role %q: %v %v", name, role, err)
	}
	return role
}

func (e *testEnv) upstreamHas(keyID string) bool {
	_, ok := e.climatiq.Key(keyID)
	return ok
}

// listedKeys is LIST keys/: each id with the role its entry names.
func (e *testEnv) listedKeys() map[string]string {
	e.t.Helper()
	resp := e.mustOK(logical.ListOperation, "keys/", nil)
	ids, _ := resp.Data["keys"].([]string)
	info, _ := resp.Data["key_info"].(map[string]any)
	out := map[string]string{}
	for _, id := range ids {
		entry, _ := info[id].(map[string]any)
		out[id], _ = entry["role"].(string)
	}
	return out
}

func (e *testEnv) tidyNow() map[string]any {
	e.t.Helper()
	return e.mustOK(logical.UpdateOperation, "tidy", map[string]any{"min_age": "0s"}).Data
}

// codedStatus is the status Vault answers with: a logical.HTTPCodedError's
// own, crossing the plugin boundary, or statusOf's.
func codedStatus(resp *logical.Response, err error) int {
	var coded logical.HTTPCodedError
	if errors.As(err, &coded) {
		return coded.Code()
	}
	return statusOf(resp, err)
}

// errorText is what Vault would show of a failed request.
func errorText(resp *logical.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	if resp != nil && resp.IsError() {
		return resp.Error().Error()
	}
	return fmt.Sprintf("%v", resp)
}

// assertNoSecrets fails when s carries any of the test credentials.
func assertNoSecrets(t *testing.T, s string) {
	t.Helper()
	for _, secret := range []string{testManagementKey, testClientSecret} {
		if strings.Contains(s, secret) {
			t.Fatalf("output carries a secret: %s", s)
		}
	}
}

// statusOf returns the HTTP status Vault would answer an error with.
func statusOf(resp *logical.Response, err error) int {
	status, _ := logical.RespondErrorCommon(&logical.Request{}, resp, err)
	if status == 0 {
		return http.StatusOK
	}
	return status
}
