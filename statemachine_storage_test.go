package carbon

// The state machine's storage: one store that the mount keeps across plugin
// instances, which each instance sees through its own view. Faults drawn by
// the model hit the views:
//
//   - a failed Put, Delete, Get or List: the k-th call from now (of chosen
//     operations), or every call under a key prefix while a window lasts;
//   - slow calls, to widen race windows in concurrent batches;
//   - a stop: from a drawn call on, the instance's storage is gone, as when
//     its plugin process is killed or reloaded. The call itself fails, or
//     hangs until a fresh instance is up and then fails; every later call of
//     the instance fails. Its upstream calls still go through: a stopped
//     plugin finishes what it started, only its storage is gone.
//
// The model's own reads (observe) pass through untouched and uncounted.
// Prefixes are drawn from those the engine was seen using, never named
// here, so the faults follow any storage layout.

import (
	"context"
	"errors"
	mrand "math/rand/v2"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

type smStorageOp uint8

const (
	smGet smStorageOp = 1 << iota
	smList
	smPut
	smDelete

	smReads  = smGet | smList
	smWrites = smPut | smDelete
	smAllOps = smReads | smWrites
)

func (op smStorageOp) String() string {
	var names []string
	for _, o := range []struct {
		op   smStorageOp
		name string
	}{{smGet, "Get"}, {smList, "List"}, {smPut, "Put"}, {smDelete, "Delete"}} {
		if op&o.op != 0 {
			names = append(names, o.name)
		}
	}
	return strings.Join(names, "|")
}

var (
	errSMStorageFault = errors.New("storage: injected failure (state machine)")
	errSMStopped      = errors.New("storage: plugin instance stopped (state machine)")
)

// smStoragePlan is one storage fault. A k-th-call plan fails the calls
// numbered [from, from+n) among the matching calls after it was armed; a
// prefix plan fails every matching call under prefix while armed.
type smStoragePlan struct {
	ops    smStorageOp
	prefix string // "" for a k-th-call plan
	from   int
	n      int
	seen   int
	step   bool // disarmed at the end of the step
}

func (p *smStoragePlan) String() string {
	if p.prefix != "" {
		return "fail " + p.ops.String() + " under " + p.prefix
	}
	return "fail " + p.ops.String() + " calls #" + strconv.Itoa(p.from) + "..#" + strconv.Itoa(p.from+p.n-1)
}

// smDelay slows storage calls down, to widen race windows.
type smDelay uint8

const (
	smNoDelay     smDelay = iota
	smJitter              // every call: yields 0-3 times
	smSlowDeletes         // every Delete: 0.5-1.5ms before it acts
	smSlowPuts            // every Put: 0.5-1.5ms before it acts
)

type smStore struct {
	under logical.Storage

	mu       sync.Mutex
	plans    []*smStoragePlan
	hits     int             // injected failures returned
	prefixes map[string]bool // first segments of the keys the engine used
	delay    smDelay
	views    []*smView
}

func newSMStore(under logical.Storage) *smStore {
	return &smStore{under: under, prefixes: map[string]bool{}}
}

type smObserverKey struct{}

type smTraceKey struct{}

// smTrace follows one request's storage calls: whether any met the stop.
type smTrace struct{ stopped atomic.Bool }

// tracing marks a context as one request's, so that its calls (and those
// of work it does on its behalf, which keeps the context's values) are
// told apart from background work.
func tracing(ctx context.Context) (context.Context, *smTrace) {
	tr := &smTrace{}
	return context.WithValue(ctx, smTraceKey{}, tr), tr
}

// observing marks a context as the model's own: its storage calls are never
// faulted nor counted.
func observing(ctx context.Context) context.Context {
	return context.WithValue(ctx, smObserverKey{}, true)
}

func isObserver(ctx context.Context) bool {
	v, _ := ctx.Value(smObserverKey{}).(bool)
	return v
}

func (s *smStore) arm(p *smStoragePlan) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.plans = append(s.plans, p)
}

// disarmStep drops the plans of the step that ends.
func (s *smStore) disarmStep() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.plans = slices.DeleteFunc(s.plans, func(p *smStoragePlan) bool { return p.step })
}

func (s *smStore) hasPlans() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.plans) > 0
}

func (s *smStore) disarmAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.plans = nil
}

func (s *smStore) hitCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits
}

func (s *smStore) setDelay(d smDelay) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// knownPrefixes are the first key segments the engine has used, sorted.
func (s *smStore) knownPrefixes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.prefixes))
	for p := range s.prefixes {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

func firstSegment(key string) string {
	if i := strings.IndexByte(key, '/'); i >= 0 {
		return key[:i+1]
	}
	return key
}

// inject decides whether the plan fails this call.
func (s *smStore) inject(op smStorageOp, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prefixes[firstSegment(key)] = true
	fail := false
	for _, p := range s.plans {
		if p.ops&op == 0 {
			continue
		}
		if p.prefix != "" {
			fail = fail || strings.HasPrefix(key, p.prefix)
			continue
		}
		i := p.seen
		p.seen++
		fail = fail || (i >= p.from && i < p.from+p.n)
	}
	if !fail {
		return nil
	}
	s.hits++
	return errSMStorageFault
}

func (s *smStore) sleep(op smStorageOp) {
	s.mu.Lock()
	d := s.delay
	s.mu.Unlock()
	switch {
	case d == smJitter:
		// A sleep costs far more than it asks for; yielding shuffles the
		// interleaving as well.
		for range mrand.IntN(4) {
			runtime.Gosched()
		}
	case d == smSlowDeletes && op == smDelete, d == smSlowPuts && op == smPut:
		time.Sleep(500*time.Microsecond + time.Duration(mrand.IntN(1000))*time.Microsecond)
	}
}

// newView is the storage of a new plugin instance.
func (s *smStore) newView() *smView {
	v := &smView{store: s, stopAt: -1, stopped: make(chan struct{}), release: make(chan struct{})}
	s.mu.Lock()
	v.gen = len(s.views)
	s.views = append(s.views, v)
	s.mu.Unlock()
	return v
}

// idle reports whether no view has a call in flight, and none ended within
// quiet.
func (s *smStore) idle(quiet time.Duration) bool {
	s.mu.Lock()
	views := append([]*smView(nil), s.views...)
	s.mu.Unlock()
	now := time.Now().UnixNano()
	for _, v := range views {
		if v.inFlight.Load() != 0 || now-v.lastDone.Load() < int64(quiet) {
			return false
		}
	}
	return true
}

// quiet reports whether the view has no call in flight and none ended
// within d.
func (v *smView) quiet(d time.Duration) bool {
	return v.inFlight.Load() == 0 && time.Now().UnixNano()-v.lastDone.Load() >= int64(d)
}

// smView is one plugin instance's storage.
type smView struct {
	store *smStore
	gen   int

	mu      sync.Mutex
	dead    bool
	stopAt  int         // the call (counted from arming) at which the instance stops; -1: none
	stopOps smStorageOp // the calls counted
	hang    bool
	calls   int
	stopped chan struct{} // closed once dead
	release chan struct{} // closed to let hung calls fail

	inFlight atomic.Int64
	lastDone atomic.Int64 // unix nanoseconds

	// cleaned: the instance's Clean has returned; it must not touch
	// storage again. usedAfterClean is the first call that did.
	cleaned        bool
	usedAfterClean string
}

// markCleaned records that the instance's Clean has returned.
func (v *smView) markCleaned() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.cleaned = true
}

// usedAfterCleanup is the first storage call the instance made after its
// Clean returned ("" if none).
func (v *smView) usedAfterCleanup() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.usedAfterClean
}

// armStop makes the k-th call of ops from now (the model's own excepted)
// stop the instance; with hang, that call waits for releaseHung before it
// fails.
func (v *smView) armStop(k int, ops smStorageOp, hang bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.stopAt, v.stopOps, v.hang, v.calls = k, ops, hang, 0
}

// kill stops the instance now (idempotent).
func (v *smView) kill() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.killLocked()
}

func (v *smView) killLocked() {
	if !v.dead {
		v.dead = true
		close(v.stopped)
	}
}

func (v *smView) isDead() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.dead
}

// releaseHung lets calls hung by a stop fail (idempotent).
func (v *smView) releaseHung() {
	v.mu.Lock()
	defer v.mu.Unlock()
	select {
	case <-v.release:
	default:
		close(v.release)
	}
}

// enter decides a call's fate before it reaches the store.
func (v *smView) enter(op smStorageOp, key string) error {
	v.mu.Lock()
	if v.cleaned && v.usedAfterClean == "" {
		v.usedAfterClean = op.String() + " " + key
	}
	if v.dead {
		v.mu.Unlock()
		return errSMStopped
	}
	if v.stopAt >= 0 && v.stopOps&op != 0 {
		i := v.calls
		v.calls++
		if i >= v.stopAt {
			v.killLocked()
			hang := v.hang
			v.mu.Unlock()
			if hang {
				<-v.release
			}
			return errSMStopped
		}
	}
	v.mu.Unlock()
	if err := v.store.inject(op, key); err != nil {
		return err
	}
	v.store.sleep(op)
	return nil
}

func (v *smView) begin(ctx context.Context, op smStorageOp, key string) (observer bool, err error) {
	if isObserver(ctx) {
		return true, nil
	}
	v.inFlight.Add(1)
	err = v.enter(op, key)
	if tr, ok := ctx.Value(smTraceKey{}).(*smTrace); ok && errors.Is(err, errSMStopped) {
		tr.stopped.Store(true)
	}
	return false, err
}

func (v *smView) end(observer bool) {
	if !observer {
		v.lastDone.Store(time.Now().UnixNano())
		v.inFlight.Add(-1)
	}
}

func (v *smView) List(ctx context.Context, prefix string) ([]string, error) {
	obs, err := v.begin(ctx, smList, prefix)
	defer v.end(obs)
	if err != nil {
		return nil, err
	}
	return v.store.under.List(ctx, prefix)
}

func (v *smView) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	obs, err := v.begin(ctx, smGet, key)
	defer v.end(obs)
	if err != nil {
		return nil, err
	}
	return v.store.under.Get(ctx, key)
}

func (v *smView) Put(ctx context.Context, e *logical.StorageEntry) error {
	obs, err := v.begin(ctx, smPut, e.Key)
	defer v.end(obs)
	if err != nil {
		return err
	}
	return v.store.under.Put(ctx, e)
}

func (v *smView) Delete(ctx context.Context, key string) error {
	obs, err := v.begin(ctx, smDelete, key)
	defer v.end(obs)
	if err != nil {
		return err
	}
	return v.store.under.Delete(ctx, key)
}
