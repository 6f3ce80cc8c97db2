package carbon

import (
	"context"
	"errors"
	"maps"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
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
