package carbon

// A model-based state-machine test: rapid drives the backend in-process
// through random sequences of operator, application and Vault actions
// (configs, roles, issue/renew/revoke/expiry, static roles, rotation,
// scheduler ticks, tidy, mount tuning, restarts, clock jumps, upstream
// faults, caller mistakes) and, since issue 16, through what happens
// between two storage writes: failed storage calls, a stop of the plugin
// at any storage call inside a request, concurrent batches of requests,
// scheduler ticks whose rotations are still in flight when Clean or a
// reload comes, and upstream behaviour that lasts (403 for missing ids, an
// operator deleting keys, creates whose answer is lost, garbage JSON).
//
// It checks the engine's safety invariants after every step:
//
//	I1  no key that is held (live lease, static current key, previous key
//	    during its overlap, released or foreign key) disappears upstream;
//	    a revoked lease's key, and its per-lease project, are gone; a
//	    previous key is gone after a healthy tick past its overlap's end;
//	I3  no panic, no deadlock, no 5xx for a caller's mistake or, without
//	    faults, at all;
//	I4  keys/ lists no key twice, and (while no storage fault is
//	    unresolved) exactly what the mount holds;
//
// and, once faults are resolved (Heal: the fault switches off, Vault's
// rollback manager and a tidy run), I4 in full: keys/ lists what the mount
// holds, keys/<id> agrees with the listing, and no marked key or per-lease
// project is upstream that the mount does not track. At the end of each
// sequence, I2: after every lease is revoked and one tidy has run, only
// static roles' keys and released keys carry the marker, and no marked
// project is left.
//
// Knobs (environment):
//
//	CARBON_SM_CHECKS    sequences (rapid.checks; default smDefaultChecks)
//	CARBON_SM_STEPS     average actions per sequence (rapid.steps)
//	CARBON_SM_SEED      seed (rapid.seed; default smDefaultSeed)
//	CARBON_SM_DURATION  soak: loop until it ends, with fresh seeds
//	CARBON_SM_SKIP      comma-separated action names left out, to explore
//	                    past a known bug
//	CARBON_SM_FAULTS    fault kinds: smDefaultFaults (default), all,
//	                    none, or a list of upstream, lasting, abandoned,
//	                    storage, stop, concurrent, inflight; "all,-stop"
//	                    drops one
//
// The -rapid.* flags win over the environment.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/helper/errutil"
	"github.com/hashicorp/vault/sdk/helper/logging"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/rotation"
	"pgregory.net/rapid"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiqtest"
)

const (
	smDefaultChecks = 600
	smDefaultSeed   = 20240601
	// Upstream fault windows make steps slow (timeouts of 1s, Retry-After
	// of 1s); this many steps after a fault action the fakes are healthy
	// again.
	smFaultSteps = 2
)

var (
	smSequences atomic.Int64
	smSteps     atomic.Int64
)

func TestStateMachine(t *testing.T) {
	faults, err := parseSMFaults(os.Getenv("CARBON_SM_FAULTS"))
	if err != nil {
		t.Fatal(err)
	}
	setRapidFlag("rapid.checks", "CARBON_SM_CHECKS", strconv.Itoa(smDefaultChecks))
	setRapidFlag("rapid.steps", "CARBON_SM_STEPS", "")
	duration, _ := time.ParseDuration(os.Getenv("CARBON_SM_DURATION"))
	start := time.Now()
	defer func() {
		t.Logf("state machine (faults: %s): %d sequences, %d steps in %s (waiting for background work: %s)", faults, smSequences.Load(), smSteps.Load(),
			time.Since(start).Round(time.Second), time.Duration(smQuiesceTime.Load()+smSettleTime.Load()).Round(time.Millisecond))
	}()
	run := func(rt *rapid.T) { runSequence(rt, faults) }
	if duration <= 0 {
		setRapidFlag("rapid.seed", "CARBON_SM_SEED", strconv.Itoa(smDefaultSeed))
		rapid.Check(t, run)
		return
	}
	// Soak: every round gets a fresh seed, so rounds explore new sequences.
	base, _ := strconv.ParseUint(os.Getenv("CARBON_SM_SEED"), 10, 64)
	if base == 0 {
		base = uint64(time.Now().UnixNano())
	}
	for round := uint64(0); time.Since(start) < duration; round++ {
		_ = flag.Set("rapid.seed", strconv.FormatUint(base+round*1_000_003, 10))
		rapid.Check(t, run)
		t.Logf("soak round %d done: %d sequences, %d steps so far", round, smSequences.Load(), smSteps.Load())
	}
}

// setRapidFlag sets a rapid flag from the environment or a default, unless
// the command line set it.
func setRapidFlag(name, env, fallback string) {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	if set {
		return
	}
	if v := os.Getenv(env); v != "" {
		_ = flag.Set(name, v)
	} else if fallback != "" {
		_ = flag.Set(name, fallback)
	}
}

// smFaults are the fault kinds a run may draw (CARBON_SM_FAULTS).
type smFaults struct {
	upstream   bool // transient upstream failures: 5xx, 429, latency, lost create answers, garbage JSON
	lasting    bool // upstream behaviour that lasts: 403/400 for missing ids, operator deletions
	abandoned  bool // creates answered 504 that take effect after the request is over
	storage    bool // failed storage calls: the k-th call of a request, or a prefix for a few steps
	stop       bool // a stop (Clean + fresh instance) at any storage call inside a request
	concurrent bool // concurrent batches of requests
	inflight   bool // ticks whose rotations are in flight when Clean or a reload comes
}

var smFaultNames = []string{"upstream", "lasting", "abandoned", "storage", "stop", "concurrent", "inflight"}

func (f *smFaults) field(name string) *bool {
	return map[string]*bool{
		"upstream": &f.upstream, "lasting": &f.lasting, "abandoned": &f.abandoned, "storage": &f.storage,
		"stop": &f.stop, "concurrent": &f.concurrent, "inflight": &f.inflight,
	}[name]
}

// smDefaultFaults are the fault kinds `make test` draws: every kind, the
// storage faults and stops inside a request included.
const smDefaultFaults = "all"

func parseSMFaults(s string) (smFaults, error) {
	var f smFaults
	if strings.TrimSpace(s) == "" {
		s = smDefaultFaults
	}
	for _, word := range strings.Split(s, ",") {
		word = strings.TrimSpace(word)
		on := !strings.HasPrefix(word, "-")
		word = strings.TrimPrefix(word, "-")
		switch word {
		case "":
		case "all", "none":
			for _, n := range smFaultNames {
				*f.field(n) = (word == "all") == on
			}
		default:
			p := f.field(word)
			if p == nil {
				return f, fmt.Errorf("CARBON_SM_FAULTS: unknown fault kind %q; use all, none or %s", word, strings.Join(smFaultNames, ", "))
			}
			*p = on
		}
	}
	return f, nil
}

func (f smFaults) String() string {
	var on []string
	for _, n := range smFaultNames {
		if *(&f).field(n) {
			on = append(on, n)
		}
	}
	if len(on) == 0 {
		return "none"
	}
	return strings.Join(on, ",")
}

func runSequence(t *rapid.T, faults smFaults) {
	smSequences.Add(1)
	m := newModel(t, faults)
	defer m.close()
	actions := map[string]func(*rapid.T){}
	// weight adds an action n times: rapid draws action names uniformly.
	weight := func(name string, n int, f func(*rapid.T)) {
		actions[name] = f
		for i := 2; i <= n; i++ {
			actions[name+"#"+strconv.Itoa(i)] = f
		}
	}
	weight("WriteConfig", 1, m.WriteConfig)
	weight("DeleteConfig", 1, m.DeleteConfig)
	weight("WriteRole", 2, m.WriteRole)
	weight("DeleteRole", 1, m.DeleteRole)
	weight("Issue", 3, m.Issue)
	weight("Renew", 2, m.Renew)
	weight("Revoke", 2, m.Revoke)
	weight("CreateStaticRole", 2, m.CreateStaticRole)
	weight("AdoptKey", 1, m.AdoptKey)
	weight("AdoptOwnedKey", 1, m.AdoptOwnedKey)
	weight("UpdateStaticRole", 1, m.UpdateStaticRole)
	weight("DeleteStaticRole", 1, m.DeleteStaticRole)
	weight("RotateRole", 1, m.RotateRole)
	weight("SchedulerTick", 2, m.SchedulerTick)
	weight("Tidy", 1, m.Tidy)
	weight("TuneMount", 1, m.TuneMount)
	weight("Restart", 1, m.Restart)
	weight("AdvanceClock", 2, m.AdvanceClock)
	weight("CallerMistake", 1, m.CallerMistake)
	weight("BadName", 1, m.BadName)
	weight("ReadStaticCreds", 1, m.ReadStaticCreds)
	weight("IssueUntilMaxKeys", 1, m.IssueUntilMaxKeys)
	weight("RenewAfterMaxRaise", 1, m.RenewAfterMaxRaise)
	weight("Heal", 1, m.Heal)
	// The orders that matter, grouped so that they come up.
	weight("RenewClockTidy", 2, m.RenewClockTidy)
	weight("ManualRotateTick", 2, m.ManualRotateTick)
	if faults.upstream {
		weight("UpstreamFault", 1, m.UpstreamFault)
		weight("RevokeWhileDeletesFail", 1, m.RevokeWhileDeletesFail)
		weight("OverlapEndWhileDeletesFail", 1, m.OverlapEndWhileDeletesFail)
	}
	if faults.concurrent {
		weight("TidyDuringIssuance", 2, m.TidyDuringIssuance)
	}
	if faults.concurrent && faults.upstream {
		weight("ExpiredRevokeDuringTidy", 1, m.ExpiredRevokeDuringTidy)
	}
	if faults.storage || faults.stop {
		weight("ReleaseThenAdopt", 2, m.ReleaseThenAdopt)
	}
	if faults.lasting {
		weight("LastingQuirk", 1, m.LastingQuirk)
		weight("OperatorDeletesKey", 1, m.OperatorDeletesKey)
		weight("OperatorDeleteThenRevoke", 1, m.OperatorDeleteThenRevoke)
	}
	if faults.abandoned {
		weight("AbandonedCreate", 1, m.AbandonedCreate)
	}
	if faults.storage || faults.stop {
		weight("FaultyRequest", 4, m.FaultyRequest)
	}
	if faults.storage {
		weight("StorageFaultWindow", 1, m.StorageFaultWindow)
	}
	if faults.stop {
		weight("IssueStopTidy", 2, m.IssueStopTidy)
	}
	if faults.concurrent {
		weight("ConcurrentBatch", 3, m.ConcurrentBatch)
	}
	if faults.inflight {
		weight("TickInFlight", 2, m.TickInFlight)
	}
	for _, name := range strings.Split(os.Getenv("CARBON_SM_SKIP"), ",") {
		name = strings.TrimSpace(name)
		for key := range actions {
			if key == name || strings.HasPrefix(key, name+"#") {
				delete(actions, key)
			}
		}
	}
	actions[""] = m.Check
	t.Repeat(actions)
	m.checkCleanupLeavesNothing()
}

// ---------------------------------------------------------------------------
// The world: fake clock, mutable mount settings, two upstream accounts.

// tunableSystemView is the mount's view of Vault, whose lease TTLs an
// operator can tune while the mount runs.
type tunableSystemView struct {
	*logical.StaticSystemView
	mu         sync.Mutex
	defaultTTL time.Duration
	maxTTL     time.Duration
}

func (v *tunableSystemView) DefaultLeaseTTL() time.Duration {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.defaultTTL
}

func (v *tunableSystemView) MaxLeaseTTL() time.Duration {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.maxTTL
}

func (v *tunableSystemView) tune(def, max time.Duration) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.defaultTTL, v.maxTTL = def, max
}

// vaultStorage refuses keys with "..", as Vault's barrier view does
// (ErrRelativePath): in-memory storage alone would accept them.
type vaultStorage struct{ logical.Storage }

var errRelativePath = errors.New("relative paths not supported")

func (s vaultStorage) List(ctx context.Context, prefix string) ([]string, error) {
	if strings.Contains(prefix, "..") {
		return nil, errRelativePath
	}
	return s.Storage.List(ctx, prefix)
}

func (s vaultStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	if strings.Contains(key, "..") {
		return nil, errRelativePath
	}
	return s.Storage.Get(ctx, key)
}

func (s vaultStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	if strings.Contains(e.Key, "..") {
		return errRelativePath
	}
	return s.Storage.Put(ctx, e)
}

func (s vaultStorage) Delete(ctx context.Context, key string) error {
	if strings.Contains(key, "..") {
		return errRelativePath
	}
	return s.Storage.Delete(ctx, key)
}

// account is one upstream Climatiq account: a fake with its projects and a
// few keys made outside Vault (which the mount may adopt, never delete).
type account struct {
	name     string
	fake     *climatiqtest.Server
	projects []string
	// missingStatus is a lasting quirk: the status this account answers
	// for ids that do not exist (0: 404 as documented).
	missingStatus int
}

// ---------------------------------------------------------------------------
// The model.

// heldKey names an upstream key in one account.
type heldKey struct {
	account string
	id      string
}

type modelLease struct {
	secret   *logical.Secret
	role     string
	config   string
	key      heldKey
	project  string
	perLease bool
	issued   time.Time // fake clock
	expires  time.Time // fake clock, as Vault's expiration manager keeps it
	// revoking: a revoke failed or its answer was lost. Vault retries it
	// on later steps; the key is no longer promised to anyone.
	revoking bool
}

type modelRole struct {
	config   string
	ttl      time.Duration
	maxTTL   time.Duration
	project  string // "" with perLease
	perLease bool
	maxKeys  int
}

type modelPreviousKey struct {
	key   heldKey
	until time.Time // overlap end: held until then
}

type modelStaticRole struct {
	config         string
	account        string
	project        string
	current        heldKey
	previous       []modelPreviousKey
	period         time.Duration
	schedule       string
	window         time.Duration
	manual         bool
	overlap        time.Duration
	deleteOnRemove bool
	lastRotated    time.Time
	// failedRotate: a rotate-role failed since the last rotation, so the
	// scheduler may retry it before the period is up.
	failedRotate bool
}

// staticIntent is what a static-role request whose outcome is unknown (a
// storage fault, a lost answer) meant to do; the next sync settles it from
// what the engine reports.
type staticIntent struct {
	op   string // create, delete, rotate, update
	role *modelStaticRole
}

type model struct {
	t      *rapid.T
	ctx    context.Context
	faults smFaults
	clock  *fakeClock
	sys    *tunableSystemView
	store  *smStore
	view   *smView // the running instance's storage
	b      *backend

	accounts map[string]*account
	foreign  map[heldKey]bool // keys made outside Vault, not adopted

	configs  map[string]string // config name -> account name
	retries  map[string]int
	roles    map[string]*modelRole
	leases   []*modelLease
	statics  map[string]*modelStaticRole
	released map[heldKey]bool
	// maybeGone: keys a failed static-role delete may have deleted, or an
	// operator deleted; no longer promised in either direction.
	maybeGone map[heldKey]bool
	// revoked: keys of leases revoked successfully: gone upstream, never
	// listed again.
	revoked map[heldKey]bool
	// limbo: marked keys that appeared upstream and that no lease or
	// static role holds (a failed or lost issuance or rotation). The
	// engine may list them until the rollback manager and tidy resolve
	// them; they must be gone or tracked after that.
	limbo map[heldKey]bool
	// tracked: limbo keys still listed after a Heal: live in the engine's
	// eyes (an issuance whose answer Vault lost), so listed until tidy
	// finds them past their expiry.
	tracked map[heldKey]bool
	// landedLate: keys an abandoned create made after its request was over
	// (AbandonedCreate). A tidy may have rolled back their WAL entry before
	// they appeared: then only tidy's orphan scan finds them.
	landedLate map[heldKey]bool
	// cleaned: the views of instances reloaded in the last steps, whose
	// Clean returned (checkNothingAfterClean).
	cleaned []*smView
	marker  string

	// seen numbers keys in the order the model first saw them: upstream
	// ids are random, and draws must not depend on them to replay.
	seen map[heldKey]int
	// projectNo numbers projects the same way, for messages.
	projectNo map[string]int

	faultSteps   int // steps left in an upstream fault window
	storageSteps int // steps left in a storage fault window
	stepHits     int // the store's injected failures when the step began
	stopped      bool
	// unresolved: a storage fault or a stop happened since the last Heal;
	// keys/ need not match the model exactly until the next one.
	unresolved bool
	// lastFault is the fake time of the last step with a fault: back-offs
	// it caused (up to rotationBackoffMax) may still be running.
	lastFault time.Time
	// batch is set while the judges of a concurrent batch run.
	batch bool
	// rotatedBy: keys rotate-role returned this step, per static role, in
	// no particular order; the sync after the step accounts for them.
	rotatedBy map[string][]heldKey
	intents   map[string]*staticIntent
	// healthyTick: this step ran a scheduler tick with nothing failing.
	healthyTick bool
}

// smClockStart is where every sequence's fake clock starts.
var smClockStart = time.Date(2030, time.January, 1, 0, 0, 0, 0, time.UTC)

var configNames = []string{"cq1", "cq2"}
var roleNames = []string{"dyn1", "dyn2"}
var staticNames = []string{"st1", "st2"}

func newModel(t *rapid.T, faults smFaults) *model {
	// A fixed start: failure messages (and schedules) replay the same.
	clock := &fakeClock{now: smClockStart}
	m := &model{
		t:          t,
		ctx:        context.Background(),
		faults:     faults,
		clock:      clock,
		store:      newSMStore(vaultStorage{&logical.InmemStorage{}}),
		accounts:   map[string]*account{},
		foreign:    map[heldKey]bool{},
		configs:    map[string]string{},
		retries:    map[string]int{},
		roles:      map[string]*modelRole{},
		statics:    map[string]*modelStaticRole{},
		released:   map[heldKey]bool{},
		maybeGone:  map[heldKey]bool{},
		revoked:    map[heldKey]bool{},
		limbo:      map[heldKey]bool{},
		tracked:    map[heldKey]bool{},
		landedLate: map[heldKey]bool{},
		seen:       map[heldKey]int{},
		projectNo:  map[string]int{},
		rotatedBy:  map[string][]heldKey{},
		intents:    map[string]*staticIntent{},
		lastFault:  clock.now.Add(-time.Hour),
	}
	for _, name := range []string{"A", "B"} {
		fake := climatiqtest.NewServer(testManagementKey)
		a := &account{name: name, fake: fake}
		for i := 1; i <= 2; i++ {
			p := fake.AddProject(fmt.Sprintf("project-%s%d", name, i))
			a.projects = append(a.projects, p.ID)
			k := fake.AddKey(p.ID, fmt.Sprintf("legacy-app-%s%d", name, i))
			m.foreign[m.see(heldKey{name, k.ID})] = true
		}
		m.accounts[name] = a
	}
	base := logical.TestSystemView()
	m.sys = &tunableSystemView{StaticSystemView: base, defaultTTL: time.Hour, maxTTL: 24 * time.Hour}
	m.view = m.store.newView()
	m.b = m.startBackend()
	return m
}

// startBackend is a fresh plugin instance (Factory + Initialize) on the
// current view of the mount's storage.
func (m *model) startBackend() *backend {
	conf := logical.TestBackendConfig()
	conf.StorageView = m.view
	conf.System = m.sys
	conf.Logger = logging.NewVaultLogger(hclog.LevelFromString(envOr("CARBON_TEST_LOG", "off")))
	raw, err := Factory(m.ctx, conf)
	if err != nil {
		m.fatalf("Factory: %v", err)
	}
	b := raw.(*backend)
	b.clock = m.clock.Now
	b.scheduler.tick = 0
	// Vault's own entry point: a failed attempt is retried in the
	// background until it succeeds (here within milliseconds of the fault
	// ending; Heal waits for it).
	b.initRetryDelay, b.initRetryMax = time.Millisecond, 4*time.Millisecond
	before := m.store.hitCount()
	if err := b.Initialize(m.ctx, &logical.InitializationRequest{Storage: m.view}); err != nil {
		m.fatalf("Initialize: %v", err)
	}
	if initRetrying(b) && m.store.hitCount() == before {
		m.fatalf("Initialize failed without an injected storage fault")
	}
	// The start's check of static keys runs in the background; the model
	// lets it end first, so that replays see the same upstream calls.
	if checked := b.staticKeyChecks.ended(); checked != nil {
		select {
		case <-checked:
		case <-time.After(10 * time.Second):
			m.fatalf("the start's check of static keys did not end")
		}
	}
	return b
}

func (m *model) close() {
	m.store.disarmAll()
	m.view.releaseHung()
	m.b.clean(m.ctx)
	for _, a := range m.accounts {
		a.fake.Close()
	}
}

func (m *model) see(k heldKey) heldKey {
	if _, ok := m.seen[k]; !ok {
		m.seen[k] = len(m.seen)
	}
	return k
}

func (m *model) now() time.Time { return m.clock.Now() }

// faultActive: something failed on purpose in this step (an upstream fault
// window, an injected storage failure, a stop), so requests may fail.
func (m *model) faultActive() bool {
	return m.faultSteps > 0 || m.store.hitCount() > m.stepHits || m.stopped
}

// ---------------------------------------------------------------------------
// Requests.

type outcome struct {
	path   string
	resp   *logical.Response
	err    error
	status int // 0 on success, else the HTTP status Vault would answer
}

func (o outcome) ok() bool        { return o.status == 0 }
func (o outcome) refused() bool   { return o.status >= 400 && o.status < 500 }
func (o outcome) failed500() bool { return o.status >= 500 }

func (o outcome) String() string {
	switch {
	case o.err != nil:
		return fmt.Sprintf("%s: %d %v", o.path, o.status, o.err)
	case o.resp != nil && o.resp.IsError():
		return fmt.Sprintf("%s: %d %v", o.path, o.status, o.resp.Error())
	}
	return fmt.Sprintf("%s: %d", o.path, o.status)
}

// send runs one request as Vault would; it touches only b and s, so it may
// run on any goroutine.
func send(ctx context.Context, b *backend, s logical.Storage, op logical.Operation, path string, data map[string]any) outcome {
	req := &logical.Request{Operation: op, Path: path, Data: data, Storage: s, DisplayName: "token-sm"}
	if op == logical.CreateOperation || op == logical.UpdateOperation {
		// Vault picks create or update by the existence check.
		ok, exists, err := b.HandleExistenceCheck(ctx, req)
		if err != nil && !errors.Is(err, logical.ErrUnsupportedPath) {
			// Vault answers a failed existence check with a 500, or a 400
			// for a field that does not parse (a UserError).
			status := http.StatusInternalServerError
			if errors.As(err, new(errutil.UserError)) {
				status = http.StatusBadRequest
			}
			return outcome{path: string(op) + " " + path, err: err, status: status}
		}
		if err == nil && ok {
			req.Operation = logical.UpdateOperation
			if !exists {
				req.Operation = logical.CreateOperation
			}
		}
	}
	o := handleOn(ctx, b, req)
	if path == "tidy" {
		// The model judges a tidy by its whole run, which may go on in the
		// background after the answer (a 202).
		b.waitTidy()
	}
	return o
}

func handleOn(ctx context.Context, b *backend, req *logical.Request) outcome {
	resp, err := b.HandleRequest(ctx, req)
	o := outcome{path: string(req.Operation) + " " + req.Path, resp: resp, err: err}
	switch {
	case err != nil:
		o.status, _ = logical.RespondErrorCommon(req, resp, err)
		if o.status == 0 {
			o.status = http.StatusInternalServerError
		}
	case resp != nil && resp.IsError():
		o.status = http.StatusBadRequest
	}
	return o
}

// request sends a request to the running instance, on this goroutine.
func (m *model) request(op logical.Operation, path string, data map[string]any) outcome {
	return send(m.ctx, m.b, m.view, op, path, data)
}

// observe is the model's own look at the mount (reads and lists): never
// faulted, never counted.
func (m *model) observe(op logical.Operation, path string, data map[string]any) outcome {
	return send(observing(m.ctx), m.b, m.view, op, path, data)
}

// smRequest is one request the model sends: built from draws on the test's
// goroutine (where it may skip), run anywhere (run touches only the backend
// and storage it is given), judged back on the test's goroutine with its
// outcome and whether Vault lost its answer (the instance stopped before
// it returned).
type smRequest struct {
	label string
	run   func(ctx context.Context, b *backend, s logical.Storage) outcome
	judge func(o outcome, lost bool)
}

func (m *model) logical(label string, op logical.Operation, path string, data map[string]any, judge func(outcome, bool)) smRequest {
	return smRequest{
		label: label,
		run: func(ctx context.Context, b *backend, s logical.Storage) outcome {
			return send(ctx, b, s, op, path, data)
		},
		judge: judge,
	}
}

// do runs requests one after the other on the running instance. With a
// storage fault armed, the background work each leaves runs before the
// next, so the fault's call number means the same on replay.
func (m *model) do(reqs ...smRequest) {
	for _, r := range reqs {
		o := r.run(m.ctx, m.b, m.view)
		if m.store.hasPlans() {
			quiesce(m.b, m.view)
		}
		r.judge(o, false)
	}
}

// expect fails the step on a 5xx, which Vault answers only for the
// engine's own failures: allowed only while something fails on purpose or
// when allow500 says the upstream was asked something it cannot do.
func (m *model) expectNo500(o outcome, allow500 bool) {
	if o.failed500() && !m.faultActive() && !allow500 {
		m.fatalf("I3: %s without a fault", o)
	}
}

// ---------------------------------------------------------------------------
// Actions: connections.

func (m *model) configData(acct string) map[string]any {
	a := m.accounts[acct]
	return map[string]any{
		"provider":        "climatiq",
		"management_key":  testManagementKey,
		"management_url":  a.fake.ManagementURL(),
		"api_url":         a.fake.APIURL(),
		"request_timeout": 1,
		"max_retries":     1,
	}
}

// WriteConfig creates a connection or re-points one to the other account.
func (m *model) WriteConfig(t *rapid.T) { m.do(m.buildWriteConfig(t)) }

func (m *model) buildWriteConfig(t *rapid.T) smRequest {
	name := rapid.SampledFrom(configNames).Draw(t, "config")
	acct := rapid.SampledFrom([]string{"A", "B"}).Draw(t, "account")
	data := m.configData(acct)
	data["max_retries"] = rapid.IntRange(0, 1).Draw(t, "max_retries")
	return m.logical("write config", logical.UpdateOperation, "config/"+name, data, func(o outcome, lost bool) {
		m.expectNo500(o, false)
		switch {
		case lost:
			m.resyncConfig(name)
		case o.ok():
			m.configs[name] = acct
		case m.faultActive():
			m.resyncConfig(name)
		default:
			// verify_connection is the only upstream call; without faults a
			// re-point may still be refused while the connection is in use.
			if _, exists := m.configs[name]; !exists || m.configs[name] == acct {
				m.fatalf("valid config write refused: %s", o)
			}
		}
	})
}

// configInUse: what the engine must refuse to delete a connection under.
func (m *model) configInUse(name string) bool {
	for _, r := range m.roles {
		if r.config == name {
			return true
		}
	}
	for _, l := range m.leases {
		if l.config == name {
			return true
		}
	}
	for _, s := range m.statics {
		if s.config == name {
			return true
		}
	}
	return false
}

func (m *model) DeleteConfig(t *rapid.T) { m.do(m.buildDeleteConfig(t)) }

func (m *model) buildDeleteConfig(t *rapid.T) smRequest {
	name := rapid.SampledFrom(configNames).Draw(t, "config")
	return m.logical("delete config", logical.DeleteOperation, "config/"+name, nil, func(o outcome, lost bool) {
		m.expectNo500(o, false)
		if m.configInUse(name) {
			if o.ok() && !lost {
				m.fatalf("config/%s deleted while in use (roles, leases or static roles need it)", name)
			}
			if lost || m.faultActive() {
				m.resyncConfig(name)
				if m.configs[name] == "" {
					m.fatalf("config/%s deleted while in use (roles, leases or static roles need it)", name)
				}
			}
			return
		}
		// Not in use by the model's count; the engine may still refuse (a
		// pending WAL entry needs the connection).
		switch {
		case lost || (!o.ok() && m.faultActive()):
			m.resyncConfig(name)
		case o.ok():
			delete(m.configs, name)
		}
	})
}

// resyncConfig learns a connection from the engine, after a write whose
// outcome is unknown.
func (m *model) resyncConfig(name string) {
	o := m.observe(logical.ReadOperation, "config/"+name, nil)
	if !o.ok() {
		m.fatalf("reading config/%s: %s", name, o)
	}
	if o.resp == nil {
		delete(m.configs, name)
		return
	}
	url, _ := o.resp.Data["management_url"].(string)
	for acct, a := range m.accounts {
		if a.fake.ManagementURL() == url {
			m.configs[name] = acct
			return
		}
	}
	m.fatalf("config/%s points to %s, no account of the model", name, url)
}

// ---------------------------------------------------------------------------
// Actions: dynamic roles and leases.

func (m *model) projectsOf(acct string) []string {
	if a := m.accounts[acct]; a != nil {
		return a.projects
	}
	return nil
}

func (m *model) allProjects() []string {
	return append(slices.Clone(m.accounts["A"].projects), m.accounts["B"].projects...)
}

var ttlChoices = []time.Duration{0, 30 * time.Second, 5 * time.Minute, time.Hour, 3 * time.Hour}
var maxTTLChoices = []time.Duration{0, 10 * time.Minute, 2 * time.Hour, 24 * time.Hour, 48 * time.Hour}

func (m *model) WriteRole(t *rapid.T) { m.do(m.buildWriteRole(t)) }

func (m *model) buildWriteRole(t *rapid.T) smRequest {
	name := rapid.SampledFrom(roleNames).Draw(t, "role")
	config := rapid.SampledFrom(configNames).Draw(t, "config")
	r := &modelRole{
		config:  config,
		ttl:     rapid.SampledFrom(ttlChoices).Draw(t, "ttl"),
		maxTTL:  rapid.SampledFrom(maxTTLChoices).Draw(t, "max_ttl"),
		maxKeys: rapid.SampledFrom([]int{0, 0, 1, 2}).Draw(t, "max_keys"),
	}
	r.perLease = rapid.IntRange(0, 3).Draw(t, "per_lease") == 0
	if !r.perLease {
		r.project = rapid.SampledFrom(m.allProjects()).Draw(t, "project")
	}
	data := map[string]any{
		"config":            config,
		"ttl":               int(r.ttl.Seconds()),
		"max_ttl":           int(r.maxTTL.Seconds()),
		"max_keys":          r.maxKeys,
		"project_per_lease": r.perLease,
		"project_id":        r.project,
	}
	acct, configExists := m.configs[config]
	valid := configExists &&
		!(r.maxTTL > 0 && r.ttl > r.maxTTL) &&
		!(r.maxTTL == 0 && r.ttl > m.sys.MaxLeaseTTL()) &&
		(r.perLease || slices.Contains(m.projectsOf(acct), r.project))
	return m.logical("write role", logical.UpdateOperation, "roles/"+name, data, func(o outcome, lost bool) {
		m.expectNo500(o, false)
		switch {
		case lost || (!o.ok() && m.faultActive()):
			m.resyncRole(name)
		case o.ok() && !valid:
			m.fatalf("invalid role accepted (config exists %v, ttl %s, max_ttl %s, project %q): %s", configExists, r.ttl, r.maxTTL, r.project, o)
		case o.ok():
			m.roles[name] = r
		case valid:
			m.fatalf("valid role write refused: %s", o)
		}
	})
}

// resyncRole learns a dynamic role from the engine, after a write whose
// outcome is unknown.
func (m *model) resyncRole(name string) {
	o := m.observe(logical.ReadOperation, "roles/"+name, nil)
	if !o.ok() {
		m.fatalf("reading roles/%s: %s", name, o)
	}
	if o.resp == nil {
		delete(m.roles, name)
		return
	}
	d := o.resp.Data
	r := &modelRole{
		config:   d["config"].(string),
		ttl:      seconds(d["ttl"]),
		maxTTL:   seconds(d["max_ttl"]),
		perLease: d["project_per_lease"] == true,
		maxKeys:  d["max_keys"].(int),
	}
	r.project, _ = d["project_id"].(string)
	m.roles[name] = r
}

func seconds(v any) time.Duration {
	switch n := v.(type) {
	case int64:
		return time.Duration(n) * time.Second
	case int:
		return time.Duration(n) * time.Second
	case float64:
		return time.Duration(n * float64(time.Second))
	}
	return 0
}

func (m *model) DeleteRole(t *rapid.T) { m.do(m.buildDeleteRole(t)) }

func (m *model) buildDeleteRole(t *rapid.T) smRequest {
	name := rapid.SampledFrom(roleNames).Draw(t, "role")
	return m.logical("delete role", logical.DeleteOperation, "roles/"+name, nil, func(o outcome, lost bool) {
		m.expectNo500(o, false)
		switch {
		case lost || (!o.ok() && m.faultActive()):
			m.resyncRole(name)
		case !o.ok():
			m.fatalf("role delete failed: %s", o)
		default:
			delete(m.roles, name)
		}
	})
}

// liveKeysOfRole counts the role's leases: held, or also those being
// revoked (whose key the engine may still count).
func (m *model) liveKeysOfRole(role string, withRevoking bool) int {
	n := 0
	for _, l := range m.leases {
		if l.role == role && (withRevoking || !l.revoking) {
			n++
		}
	}
	return n
}

// Issue reads creds/<role>, as an application does.
func (m *model) Issue(t *rapid.T) { m.do(m.buildIssue(t)) }

func (m *model) buildIssue(t *rapid.T) smRequest {
	return m.issueRequest(rapid.SampledFrom(roleNames).Draw(t, "role"), 0)
}

// issueRequest reads creds/<name>. slack counts other issuances of the
// role running at the same time (a concurrent batch): each holds a place
// of max_keys while it runs.
func (m *model) issueRequest(name string, slack int) smRequest {
	r := m.roles[name]
	return m.logical("issue "+name, logical.ReadOperation, "creds/"+name, nil, func(o outcome, lost bool) {
		// Judged in order, right after the issuances before it: the
		// counts are those it met.
		m.judgeIssue(name, r, o, lost, m.liveKeysOfRole(name, false), m.liveKeysOfRole(name, true)+slack)
	})
}

func (m *model) judgeIssue(name string, r *modelRole, o outcome, lost bool, held, mayFill int) {
	if lost {
		return // Vault never got the answer: no lease; what it made is limbo
	}
	if r == nil {
		if !o.refused() && !(o.failed500() && m.faultActive()) {
			m.fatalf("creds of a missing role: want a 4xx, got %s", o)
		}
		return
	}
	acct := m.configs[r.config]
	projectElsewhere := !r.perLease && !slices.Contains(m.projectsOf(acct), r.project)
	m.expectNo500(o, projectElsewhere)
	capped := r.maxKeys > 0 && (mayFill+m.trackedOfRole(name) >= r.maxKeys)
	switch {
	case o.ok() && !m.batch && r.maxKeys > 0 && held >= r.maxKeys:
		m.fatalf("role %s issued beyond max_keys=%d (%d live)", name, r.maxKeys, held)
	case !o.ok() && !capped && !m.faultActive() && !projectElsewhere:
		m.fatalf("issuance failed without a fault: %s", o)
	case !o.ok():
		return
	}
	keyID, _ := o.resp.Data["key_id"].(string)
	project, _ := o.resp.Data["project_id"].(string)
	key := m.see(heldKey{acct, keyID})
	if _, found := m.accounts[acct].fake.Key(keyID); !found {
		m.fatalf("I1: issued key %s is not in account %s", keyID, acct)
	}
	switch {
	case r.perLease && slices.Contains(m.allProjects(), project):
		m.fatalf("role %s is project_per_lease but issued into shared project %s (stale role?)", name, project)
	case !r.perLease && project != r.project:
		m.fatalf("role %s issued into project %s, want %s (stale role?)", name, project, r.project)
	case o.resp.Secret.TTL != r.ttl:
		m.fatalf("role %s lease ttl %s, want the role's %s (stale role?)", name, o.resp.Secret.TTL, r.ttl)
	}
	now := m.now()
	delete(m.limbo, key)
	m.leases = append(m.leases, &modelLease{
		secret:   o.resp.Secret,
		role:     name,
		config:   r.config,
		key:      key,
		project:  project,
		perLease: r.perLease,
		issued:   now,
		expires:  now.Add(m.vaultLeaseTTL(o.resp.Secret.TTL, o.resp.Secret.MaxTTL)),
	})
}

// trackedOfRole counts keys of the role that the engine tracks as live
// though Vault lost their answer: they fill max_keys places until tidy
// finds them expired.
func (m *model) trackedOfRole(role string) int {
	if len(m.tracked) == 0 && len(m.limbo) == 0 {
		return 0
	}
	n := 0
	for _, k := range m.listKeys() {
		if m.tracked[k.key] || m.limbo[k.key] {
			if k.kind == keyKindDynamic && k.role == role {
				n++
			}
		}
	}
	return n
}

// vaultLeaseTTL is the TTL Vault gives a new lease: the mount default for
// 0, capped by the secret's max TTL and the mount's.
func (m *model) vaultLeaseTTL(ttl, maxTTL time.Duration) time.Duration {
	if ttl == 0 {
		ttl = m.sys.DefaultLeaseTTL()
	}
	if maxTTL == 0 || maxTTL > m.sys.MaxLeaseTTL() {
		maxTTL = m.sys.MaxLeaseTTL()
	}
	return min(ttl, maxTTL)
}

// IssueUntilMaxKeys issues from a capped role until the cap answers.
func (m *model) IssueUntilMaxKeys(t *rapid.T) {
	name := rapid.SampledFrom(roleNames).Draw(t, "role")
	r := m.roles[name]
	if r == nil || r.maxKeys == 0 {
		t.Skip("no capped role")
	}
	for i := 0; i <= r.maxKeys; i++ {
		m.do(m.issueRequest(name, 0))
	}
}

func (m *model) pickLease(t *rapid.T) *modelLease {
	if len(m.leases) == 0 {
		t.Skip("no live lease")
	}
	return m.leases[rapid.IntRange(0, len(m.leases)-1).Draw(t, "lease")]
}

// Renew renews a lease as Vault's expiration manager does.
func (m *model) Renew(t *rapid.T) { m.do(m.buildRenew(t)) }

func (m *model) buildRenew(t *rapid.T) smRequest {
	l := m.pickLease(t)
	increment := rapid.SampledFrom([]time.Duration{0, 10 * time.Minute, time.Hour, 6 * time.Hour}).Draw(t, "increment")
	return m.renewRequest(l, increment)
}

func (m *model) renewRequest(l *modelLease, increment time.Duration) smRequest {
	s := *l.secret
	s.Increment = increment
	// CalculateTTL measures elapsed time with the real clock from IssueTime.
	s.IssueTime = time.Now().Add(-m.now().Sub(l.issued))
	expired := !m.now().Before(l.expires)
	return smRequest{
		label: "renew",
		run: func(ctx context.Context, b *backend, st logical.Storage) outcome {
			if expired {
				return outcome{path: "renew (skipped: expired)"} // Vault does not renew an expired lease
			}
			return handleOn(ctx, b, &logical.Request{Operation: logical.RenewOperation, Storage: st, Secret: &s})
		},
		judge: func(o outcome, lost bool) {
			if expired || lost {
				return // Vault keeps the lease's old end
			}
			// Past the role's (possibly lowered) max TTL, renew errors.
			elapsed := m.now().Sub(l.issued)
			pastMax := true
			if r := m.roles[l.role]; r != nil {
				max := r.maxTTL
				if max == 0 || max > m.sys.MaxLeaseTTL() {
					max = m.sys.MaxLeaseTTL()
				}
				pastMax = elapsed >= max
			}
			m.expectNo500(o, pastMax)
			if !o.ok() || !slices.Contains(m.leases, l) {
				return
			}
			ttl := o.resp.Secret.TTL
			if ttl > m.sys.MaxLeaseTTL() {
				ttl = m.sys.MaxLeaseTTL()
			}
			l.expires = m.now().Add(ttl)
			l.secret.TTL = o.resp.Secret.TTL
		},
	}
}

// RenewAfterMaxRaise raises a role's max_ttl and renews one of its leases
// past the max_ttl it was issued under: the lease outlives the inventory's
// first expiry estimate.
func (m *model) RenewAfterMaxRaise(t *rapid.T) { m.do(m.buildRenewAfterMaxRaise(t)...) }

func (m *model) buildRenewAfterMaxRaise(t *rapid.T) []smRequest {
	_, reqs := m.drawRenewAfterMaxRaise(t)
	return reqs
}

func (m *model) drawRenewAfterMaxRaise(t *rapid.T) (*modelLease, []smRequest) {
	l := m.pickLease(t)
	r := m.roles[l.role]
	if r == nil || l.revoking {
		t.Skip("lease's role is gone")
	}
	increment := rapid.SampledFrom([]time.Duration{time.Hour, 6 * time.Hour}).Draw(t, "increment")
	data := map[string]any{"max_ttl": int((48 * time.Hour).Seconds()), "ttl": int(time.Hour.Seconds())}
	raise := m.logical("raise max_ttl", logical.UpdateOperation, "roles/"+l.role, data, func(o outcome, lost bool) {
		m.expectNo500(o, false)
		switch {
		case lost || (!o.ok() && m.faultActive()):
			m.resyncRole(l.role)
		case o.ok() && m.roles[l.role] != nil:
			m.roles[l.role].maxTTL, m.roles[l.role].ttl = 48*time.Hour, time.Hour
		}
	})
	return l, []smRequest{raise, m.renewRequest(l, increment)}
}

func (m *model) Revoke(t *rapid.T) { m.do(m.buildRevoke(t)) }

func (m *model) buildRevoke(t *rapid.T) smRequest { return m.revokeRequest(m.pickLease(t)) }

// revokeRequest revokes a lease as Vault does; a failed revoke leaves it
// live, to be retried.
func (m *model) revokeRequest(l *modelLease) smRequest {
	s := *l.secret
	return smRequest{
		label: "revoke",
		run: func(ctx context.Context, b *backend, st logical.Storage) outcome {
			return handleOn(ctx, b, &logical.Request{Operation: logical.RevokeOperation, Storage: st, Secret: &s})
		},
		judge: func(o outcome, lost bool) { m.judgeRevoke(l, o, lost) },
	}
}

func (m *model) judgeRevoke(l *modelLease, o outcome, lost bool) {
	m.expectNo500(o, m.configs[l.config] == "")
	if lost || !o.ok() {
		if slices.Contains(m.leases, l) {
			l.revoking = true
		}
		return
	}
	m.leases = slices.DeleteFunc(m.leases, func(x *modelLease) bool { return x == l })
	m.revoked[l.key] = true
	// Revoked means gone upstream, the per-lease project with its key.
	if _, found := m.accounts[l.key.account].fake.Key(l.key.id); found {
		m.fatalf("I1: the lease of key %s (role %s) was revoked, and the key is still upstream in account %s", l.key.id, l.role, l.key.account)
	}
	if l.perLease {
		if _, found := m.accounts[l.key.account].fake.Project(l.project); found {
			m.fatalf("I1: the lease of key %s (role %s) was revoked, and its per-lease project %s is still upstream", l.key.id, l.role, l.project)
		}
	}
}

// revokeNow revokes a lease on this goroutine; it reports success.
func (m *model) revokeNow(l *modelLease) bool {
	m.do(m.revokeRequest(l))
	return !slices.Contains(m.leases, l)
}

// expireLeases revokes what has expired and retries failed revokes, as
// Vault's expiration manager does.
func (m *model) expireLeases() {
	now := m.now()
	for _, l := range slices.Clone(m.leases) {
		if l.revoking || !now.Before(l.expires) {
			m.revokeNow(l)
		}
	}
}

// ---------------------------------------------------------------------------
// Actions: static roles.

// staticParams draws a rotation policy; valid says whether the engine
// must accept it.
func (m *model) staticParams(t *rapid.T, s *modelStaticRole) (map[string]any, bool) {
	mode := rapid.SampledFrom([]string{"period", "period", "schedule", "manual"}).Draw(t, "mode")
	return m.staticParamsMode(t, s, mode)
}

func (m *model) staticParamsMode(t *rapid.T, s *modelStaticRole, mode string) (map[string]any, bool) {
	data := map[string]any{}
	s.period, s.schedule, s.window, s.manual = 0, "", 0, false
	interval := time.Duration(0)
	switch mode {
	case "period":
		s.period = rapid.SampledFrom([]time.Duration{5 * time.Second, 30 * time.Second, 10 * time.Minute, time.Hour}).Draw(t, "period")
		data["rotation_period"] = int(s.period.Seconds())
		interval = s.period
	case "schedule":
		s.schedule, s.window = "0 */3 * * *", time.Hour
		data["rotation_schedule"] = s.schedule
		data["rotation_window"] = int(s.window.Seconds())
		interval = 3 * time.Hour
	case "manual":
		s.manual = true
		data["disable_automated_rotation"] = true
	}
	s.overlap = rapid.SampledFrom([]time.Duration{0, 0, 3 * time.Second, 20 * time.Second, 5 * time.Minute, 30 * time.Minute}).Draw(t, "overlap")
	data["overlap_period"] = int(s.overlap.Seconds())
	s.deleteOnRemove = rapid.Bool().Draw(t, "delete_key_on_remove")
	data["delete_key_on_remove"] = s.deleteOnRemove
	return data, interval == 0 || s.overlap < interval
}

func (m *model) CreateStaticRole(t *rapid.T) { m.do(m.buildCreateStatic(t, "")) }

// buildCreateStatic creates a static role; mode "" draws the policy.
func (m *model) buildCreateStatic(t *rapid.T, mode string) smRequest {
	name := rapid.SampledFrom(staticNames).Draw(t, "static")
	if m.statics[name] != nil {
		t.Skip("static role exists")
	}
	config := rapid.SampledFrom(configNames).Draw(t, "config")
	s := &modelStaticRole{config: config, account: m.configs[config]}
	if s.account == "" {
		t.Skip("no such connection") // CallerMistake covers it
	}
	// A project the connection cannot see is a CallerMistake.
	s.project = rapid.SampledFrom(m.projectsOf(s.account)).Draw(t, "project")
	var data map[string]any
	var valid bool
	if mode == "" {
		data, valid = m.staticParams(t, s)
	} else {
		data, valid = m.staticParamsMode(t, s, mode)
	}
	data["config"], data["project_id"] = config, s.project
	return m.createStaticRequest(name, s, data, valid, heldKey{})
}

// AdoptKey creates a static role that adopts an existing key: one made
// outside Vault or released (allowed), or one the mount holds (must be
// refused: two owners would delete it under each other).
func (m *model) AdoptKey(t *rapid.T)      { m.do(m.buildAdopt(t, false)) }
func (m *model) AdoptOwnedKey(t *rapid.T) { m.do(m.buildAdopt(t, true)) }

func (m *model) buildAdopt(t *rapid.T, owned bool) smRequest {
	name := rapid.SampledFrom(staticNames).Draw(t, "static")
	if m.statics[name] != nil {
		t.Skip("static role exists; key_id cannot change")
	}
	type candidate struct {
		key   heldKey
		owned bool
	}
	var candidates []candidate
	for k := range m.foreign {
		candidates = append(candidates, candidate{k, false})
	}
	for k := range m.released {
		candidates = append(candidates, candidate{k, false})
	}
	for _, l := range m.leases {
		if !l.perLease && !l.revoking {
			candidates = append(candidates, candidate{l.key, true})
		}
	}
	for _, s := range m.statics {
		candidates = append(candidates, candidate{s.current, true})
		for _, p := range s.previous {
			candidates = append(candidates, candidate{p.key, true})
		}
	}
	candidates = slices.DeleteFunc(candidates, func(c candidate) bool { return m.maybeGone[c.key] || c.owned != owned })
	if len(candidates) == 0 {
		t.Skip("no key to adopt")
	}
	sort.Slice(candidates, func(i, j int) bool { return m.seen[candidates[i].key] < m.seen[candidates[j].key] })
	c := rapid.SampledFrom(candidates).Draw(t, "adopt")
	return m.adoptRequest(t, name, c.key, c.owned)
}

// adoptRequest creates static role name adopting key; owned says the
// mount holds the key, so the engine must refuse.
func (m *model) adoptRequest(t *rapid.T, name string, key heldKey, owned bool) smRequest {
	c := struct {
		key   heldKey
		owned bool
	}{key, owned}
	up, exists := m.accounts[c.key.account].fake.Key(c.key.id)
	if !exists {
		t.Skip("key already gone upstream")
	}
	// Adopt through a connection to the key's account.
	var config string
	for _, n := range configNames {
		if m.configs[n] == c.key.account {
			config = n
		}
	}
	if config == "" {
		t.Skip("no connection to the key's account")
	}
	s := &modelStaticRole{config: config, account: c.key.account, project: up.Project.ID}
	data, valid := m.staticParams(t, s)
	data["config"], data["project_id"], data["key_id"] = config, s.project, c.key.id
	if c.owned {
		return m.logical("adopt owned key", logical.CreateOperation, "static-roles/"+name, data, func(o outcome, lost bool) {
			if o.ok() && !lost {
				m.fatalf("I1: static role %s adopted key %s that the mount already holds", name, c.key.id)
			}
			m.expectNo500(o, false)
			if lost || m.faultActive() {
				m.intents[name] = &staticIntent{op: "refused-adopt", role: s}
			}
		})
	}
	return m.createStaticRequest(name, s, data, valid, c.key)
}

// createStaticRequest writes a new static role and records its key;
// adopted is the key it must adopt, if any.
func (m *model) createStaticRequest(name string, s *modelStaticRole, data map[string]any, valid bool, adopted heldKey) smRequest {
	return m.logical("create static role", logical.CreateOperation, "static-roles/"+name, data, func(o outcome, lost bool) {
		m.expectNo500(o, false)
		switch {
		case lost || (!o.ok() && m.faultActive()):
			m.intents[name] = &staticIntent{op: "create", role: s}
			return
		case o.ok() && !valid:
			m.fatalf("invalid static role accepted: %v", data)
		case !o.ok():
			if valid && !m.faultActive() {
				m.fatalf("valid static role refused: %s", o)
			}
			return
		}
		read := m.observe(logical.ReadOperation, "static-roles/"+name, nil)
		if !read.ok() || read.resp == nil {
			m.fatalf("reading the new static role: %s", read)
		}
		m.adoptStatic(name, s, heldKey{s.account, read.resp.Data["key_id"].(string)})
		if adopted.id != "" && s.current != adopted {
			m.fatalf("static role %s adopted %s but holds %s", name, adopted.id, s.current.id)
		}
	})
}

// adoptStatic records a static role the engine now holds, with its key.
func (m *model) adoptStatic(name string, s *modelStaticRole, key heldKey) {
	s.current = m.see(key)
	s.lastRotated = m.now()
	if _, found := m.accounts[s.account].fake.Key(s.current.id); !found {
		m.fatalf("static role %s key %s is not upstream", name, s.current.id)
	}
	delete(m.foreign, s.current)
	delete(m.released, s.current)
	delete(m.limbo, s.current)
	m.statics[name] = s
}

func (m *model) applyStaticParams(dst, src *modelStaticRole) {
	dst.period, dst.schedule, dst.window, dst.manual = src.period, src.schedule, src.window, src.manual
	dst.overlap, dst.deleteOnRemove = src.overlap, src.deleteOnRemove
}

// UpdateStaticRole changes the overlap, delete_key_on_remove and the period
// of an existing role.
func (m *model) UpdateStaticRole(t *rapid.T) { m.do(m.buildUpdateStatic(t)) }

func (m *model) buildUpdateStatic(t *rapid.T) smRequest {
	name := rapid.SampledFrom(staticNames).Draw(t, "static")
	s := m.statics[name]
	if s == nil {
		t.Skip("no such static role")
		return smRequest{} // Skip ends the goroutine; staticcheck cannot tell
	}
	next := *s
	next.overlap = rapid.SampledFrom([]time.Duration{0, 3 * time.Second, 20 * time.Second, 5 * time.Minute}).Draw(t, "overlap")
	next.deleteOnRemove = rapid.Bool().Draw(t, "delete_key_on_remove")
	data := map[string]any{"overlap_period": int(next.overlap.Seconds()), "delete_key_on_remove": next.deleteOnRemove}
	interval := 3 * time.Hour
	switch {
	case s.manual:
		interval = 0
	case s.schedule == "":
		next.period = rapid.SampledFrom([]time.Duration{5 * time.Second, 30 * time.Second, 10 * time.Minute, time.Hour}).Draw(t, "period")
		data["rotation_period"] = int(next.period.Seconds())
		interval = next.period
	}
	valid := interval == 0 || next.overlap < interval
	return m.logical("update static role", logical.UpdateOperation, "static-roles/"+name, data, func(o outcome, lost bool) {
		m.expectNo500(o, false)
		switch {
		case lost || (!o.ok() && m.faultActive()):
			m.intents[name] = &staticIntent{op: "update", role: &next}
		case o.ok() && !valid:
			m.fatalf("static role update with overlap %s >= interval %s accepted", next.overlap, interval)
		case o.ok():
			if m.statics[name] != nil {
				m.applyStaticParams(m.statics[name], &next)
			}
		case valid:
			m.fatalf("valid static role update refused: %s", o)
		}
	})
}

func (m *model) DeleteStaticRole(t *rapid.T) { m.do(m.buildDeleteStatic(t)) }

func (m *model) buildDeleteStatic(t *rapid.T) smRequest {
	return m.deleteStaticRequest(rapid.SampledFrom(staticNames).Draw(t, "static"))
}

func (m *model) deleteStaticRequest(name string) smRequest {
	s := m.statics[name]
	return m.logical("delete static role", logical.DeleteOperation, "static-roles/"+name, nil, func(o outcome, lost bool) {
		m.expectNo500(o, s != nil && m.configs[s.config] != s.account)
		if s == nil || m.statics[name] != s {
			return
		}
		switch {
		case lost || (!o.ok() && m.faultActive()):
			m.intents[name] = &staticIntent{op: "delete", role: s}
			if s.deleteOnRemove {
				for _, k := range s.keys() {
					m.maybeGone[k] = true
				}
			}
		case o.ok():
			m.removeStatic(name, s)
		case o.failed500() && s.deleteOnRemove:
			// Part of the keys may be gone; the role stays.
			for _, k := range s.keys() {
				m.maybeGone[k] = true
			}
		}
	})
}

func (s *modelStaticRole) keys() []heldKey {
	keys := []heldKey{s.current}
	for _, p := range s.previous {
		keys = append(keys, p.key)
	}
	return keys
}

// removeStatic records a static role's deletion: its keys are released
// unless delete_key_on_remove. A key already gone upstream is not: a
// previous key whose overlap had ended may have been deleted by a rotation
// whose last write (the role without it) was lost, so the role still
// listed it when it was deleted.
func (m *model) removeStatic(name string, s *modelStaticRole) {
	delete(m.statics, name)
	for _, k := range s.keys() {
		_, upstream := m.accounts[k.account].fake.Key(k.id)
		if !s.deleteOnRemove && upstream {
			m.released[k] = true
		} else {
			m.maybeGone[k] = true
		}
	}
}

func (m *model) RotateRole(t *rapid.T) { m.do(m.buildRotate(t)) }

func (m *model) buildRotate(t *rapid.T) smRequest {
	return m.rotateRequest(rapid.SampledFrom(staticNames).Draw(t, "static"))
}

func (m *model) rotateRequest(name string) smRequest {
	s := m.statics[name]
	return m.logical("rotate "+name, logical.UpdateOperation, "rotate-role/"+name, nil, func(o outcome, lost bool) {
		if s == nil {
			if !o.refused() && !(o.failed500() && m.faultActive()) {
				m.fatalf("rotate-role of a missing role: want a 4xx, got %s", o)
			}
			return
		}
		m.expectNo500(o, m.configs[s.config] != s.account)
		switch {
		case lost || (!o.ok() && m.faultActive()):
			m.intents[name] = &staticIntent{op: "rotate", role: s}
		case !o.ok():
			s.failedRotate = true
		default:
			m.rotatedBy[name] = append(m.rotatedBy[name], heldKey{s.account, o.resp.Data["key_id"].(string)})
		}
	})
}

// ReadStaticCreds reads static-creds/<name>: the current key, never a 5xx.
func (m *model) ReadStaticCreds(t *rapid.T) { m.do(m.buildReadStaticCreds(t)) }

func (m *model) buildReadStaticCreds(t *rapid.T) smRequest {
	name := rapid.SampledFrom(staticNames).Draw(t, "static")
	return m.logical("read static creds", logical.ReadOperation, "static-creds/"+name, nil, func(o outcome, lost bool) {
		m.expectNo500(o, false)
		s := m.statics[name]
		if s == nil || !o.ok() || lost || m.batch || len(m.rotatedBy[name]) > 0 {
			return
		}
		if id := o.resp.Data["key_id"]; id != s.current.id {
			m.fatalf("static-creds/%s key_id %v, want %s", name, id, s.current.id)
		}
	})
}

func (m *model) SchedulerTick(*rapid.T) { m.do(m.tickRequest()) }

// tickRequest runs the scheduler's tick and waits for its rotations. A
// tick that does not end is a failure (I3); its instance is cleaned up so
// that it stops spinning.
func (m *model) tickRequest() smRequest {
	return smRequest{
		label: "tick",
		run: func(_ context.Context, b *backend, s logical.Storage) outcome {
			done := make(chan struct{})
			go func() { defer close(done); b.runDueRotations(s) }()
			select {
			case <-done:
				return outcome{path: "scheduler tick"}
			case <-time.After(smTickTimeout):
				go b.clean(context.Background())
				return outcome{path: "scheduler tick", status: -1}
			}
		},
		judge: func(o outcome, _ bool) {
			if o.status == -1 {
				m.fatalf("I3: a scheduler tick did not finish within %s", smTickTimeout)
			}
			if !m.faultActive() && !m.batch {
				m.healthyTick = true
			}
		},
	}
}

// smTickTimeout bounds a scheduler tick (they take milliseconds).
const smTickTimeout = 10 * time.Second

// syncStatics settles static roles with what the engine reports: rotations
// the step made on request (in any order) or on its own (the scheduler,
// checked against the role's policy), and requests whose outcome is
// unknown.
func (m *model) syncStatics() {
	now := m.now()
	list := m.observe(logical.ListOperation, "static-roles/", nil)
	if !list.ok() {
		m.fatalf("listing static-roles/: %s", list)
	}
	exists := map[string]bool{}
	if list.resp != nil {
		names, _ := list.resp.Data["keys"].([]string)
		for _, n := range names {
			exists[n] = true
		}
	}
	for _, name := range staticNames {
		s, intent := m.statics[name], m.intents[name]
		switch {
		case s == nil && !exists[name]:
			continue
		case s == nil:
			if intent == nil || intent.op != "create" {
				m.fatalf("static role %s exists, which no request created", name)
			}
			read := m.observe(logical.ReadOperation, "static-roles/"+name, nil)
			if !read.ok() || read.resp == nil {
				m.fatalf("reading static role %s: %s", name, read)
			}
			m.adoptStatic(name, intent.role, heldKey{intent.role.account, read.resp.Data["key_id"].(string)})
			continue
		case !exists[name]:
			if intent == nil || intent.op != "delete" {
				m.fatalf("static role %s vanished", name)
			}
			m.removeStatic(name, s)
			continue
		}
		read := m.observe(logical.ReadOperation, "static-roles/"+name, nil)
		if !read.ok() || read.resp == nil {
			m.fatalf("static role %s vanished: %s", name, read)
		}
		if intent != nil && intent.op == "update" {
			m.resyncStaticParams(s, read.resp.Data)
		}
		id, _ := read.resp.Data["key_id"].(string)
		current := heldKey{s.account, id}
		manual := m.rotatedBy[name]
		uncertain := intent != nil || m.batch
		if current != s.current && !slices.Contains(manual, current) && (intent == nil || intent.op != "rotate") && !m.maybeGone[s.current] {
			// The scheduler rotated it. (A role whose key an operator
			// deleted is healed by a rotation at the next start or read.)
			switch {
			case s.manual:
				m.fatalf("manual static role %s (disable_automated_rotation) was rotated by the scheduler", name)
			case s.period > 0 && now.Before(s.lastRotated.Add(s.period)) && !s.failedRotate:
				m.fatalf("static role %s rotated at %s, before its period %s from %s", name, now, s.period, s.lastRotated)
			case s.schedule != "" && !inRotationWindow(s.schedule, s.window, now):
				m.fatalf("static role %s rotated at %s, outside rotation_window %s of schedule %q", name, now.Format(time.RFC3339), s.window, s.schedule)
			}
		}
		if len(manual) > 0 && current != s.current && !slices.Contains(manual, current) && !uncertain {
			m.fatalf("static role %s: rotate-role answered %v, and the role holds %s", name, manual, current.id)
		}
		if current == s.current && len(manual) == 0 {
			if uncertain {
				m.mergePrevious(name, s, read.resp.Data)
			}
			continue
		}
		if len(manual) > 0 && current == s.current && !uncertain {
			m.fatalf("static role %s: rotate-role answered %v, and the role still holds %s", name, manual, current.id)
		}
		m.recordRotation(name, s, current, manual)
		if uncertain {
			m.mergePrevious(name, s, read.resp.Data)
		}
	}
	clear(m.intents)
	clear(m.rotatedBy)
}

// recordRotation makes next the role's key; every other key it held since
// the last sync (the old one, and those of rotations in between) is a
// previous key in its overlap.
func (m *model) recordRotation(name string, s *modelStaticRole, next heldKey, between []heldKey) {
	m.see(next)
	if _, found := m.accounts[next.account].fake.Key(next.id); !found && !m.maybeGone[next] {
		m.fatalf("static role %s rotated to %s, which is not upstream", name, next.id)
	}
	now := m.now()
	for _, k := range append([]heldKey{s.current}, between...) {
		if k == next || slices.ContainsFunc(s.previous, func(p modelPreviousKey) bool { return p.key == k }) {
			continue
		}
		m.see(k)
		s.previous = append(s.previous, modelPreviousKey{key: k, until: now.Add(s.overlap)})
		delete(m.limbo, k)
	}
	s.current, s.lastRotated, s.failedRotate = next, now, false
	delete(m.limbo, next)
}

// mergePrevious adds the previous keys the engine lists that the model
// does not know: rotations it could not see one by one (a batch, a lost
// answer).
func (m *model) mergePrevious(name string, s *modelStaticRole, data map[string]any) {
	list, _ := data["previous_keys"].([]map[string]any)
	for _, p := range list {
		id, _ := p["key_id"].(string)
		k := heldKey{s.account, id}
		if id == "" || k == s.current || slices.ContainsFunc(s.previous, func(p modelPreviousKey) bool { return p.key == k }) {
			continue
		}
		until, _ := time.Parse(time.RFC3339, fmt.Sprint(p["expires"]))
		m.see(k)
		s.previous = append(s.previous, modelPreviousKey{key: k, until: until})
		delete(m.limbo, k)
	}
}

// resyncStaticParams learns a static role's policy from a read, after an
// update whose outcome is unknown.
func (m *model) resyncStaticParams(s *modelStaticRole, d map[string]any) {
	s.period = seconds(d["rotation_period"])
	s.schedule, _ = d["rotation_schedule"].(string)
	s.window = seconds(d["rotation_window"])
	s.manual = d["disable_automated_rotation"] == true
	s.overlap = seconds(d["overlap_period"])
	s.deleteOnRemove = d["delete_key_on_remove"] == true
}

// inRotationWindow: a slot of the schedule lies in [t-window, t].
func inRotationWindow(schedule string, window time.Duration, t time.Time) bool {
	sched, err := rotation.DefaultScheduler.Parse(schedule)
	if err != nil {
		return false
	}
	return !sched.Next(t.Add(-window - time.Second)).After(t)
}

// ---------------------------------------------------------------------------
// Actions: tidy, mount, restart, clock, faults, mistakes.

func (m *model) Tidy(t *rapid.T) { m.do(m.buildTidy(t)) }

func (m *model) buildTidy(t *rapid.T) smRequest {
	data := map[string]any{"dry_run": rapid.Bool().Draw(t, "dry_run")}
	if minAge := rapid.SampledFrom([]int{-1, 0, 1, 30, 600}).Draw(t, "min_age"); minAge >= 0 {
		data["min_age"] = minAge
	}
	return m.tidyRequest(data)
}

func (m *model) tidyRequest(data map[string]any) smRequest {
	req := m.logical("tidy", logical.UpdateOperation, "tidy", data, func(o outcome, lost bool) {
		m.expectNo500(o, false)
		// One run at a time: a tidy sent beside another may be refused.
		if !o.ok() && !lost && !m.faultActive() && !strings.Contains(o.String(), "is still running") {
			m.fatalf("tidy refused: %s", o)
		}
	})
	run := req.run
	req.run = func(ctx context.Context, b *backend, s logical.Storage) outcome {
		// Right after a stop the instance says it started a moment later
		// than it did (engineStartedLater): let the work its requests left
		// finish, or tidy would take their spent WAL entries for stale.
		if v, ok := s.(*smView); ok && engineStartsLater(b) {
			quiesce(b, v)
		}
		return run(ctx, b, s)
	}
	return req
}

func (m *model) TuneMount(t *rapid.T) {
	max := rapid.SampledFrom([]time.Duration{time.Hour, 4 * time.Hour, 24 * time.Hour, 72 * time.Hour}).Draw(t, "mount_max_ttl")
	def := rapid.SampledFrom([]time.Duration{10 * time.Minute, time.Hour}).Draw(t, "mount_default_ttl")
	m.sys.tune(min(def, max), max)
}

// Restart is a plugin reload: Clean, then a fresh instance on the same
// storage and mount. The old instance's storage is gone once Clean returns.
func (m *model) Restart(*rapid.T) { m.reload() }

func (m *model) reload() {
	m.b.clean(m.ctx)
	m.view.markCleaned()
	m.cleaned = append(m.cleaned, m.view)
	m.view.kill()
	m.view = m.store.newView()
	m.b = m.startBackend()
	engineStartedLater(m.b)
}

func (m *model) AdvanceClock(t *rapid.T) {
	d := rapid.SampledFrom([]time.Duration{time.Second, 5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute, 45 * time.Minute, 2 * time.Hour, 5 * time.Hour}).Draw(t, "advance")
	m.advance(d)
}

// land carries out the creates an upstream held back (AbandonedCreate):
// they take effect after their request, before time moves on.
func (m *model) land() {
	for _, acct := range sortedKeys(m.accounts) {
		fake := m.accounts[acct].fake
		before := map[string]bool{}
		for _, k := range fake.Keys() {
			before[k.ID] = true
		}
		if fake.Land() == 0 {
			continue
		}
		for _, k := range fake.Keys() {
			if !before[k.ID] {
				m.landedLate[heldKey{acct, k.ID}] = true
			}
		}
	}
}

// advance moves the fake clock. Past walRollbackMinAge, Vault's rollback
// manager has run meanwhile: every WAL entry left is that old by now.
func (m *model) advance(d time.Duration) {
	m.land()
	m.clock.Advance(d)
	if d >= walRollbackMinAge {
		m.rollbackManager(false)
	}
}

// rollbackManager is Vault's periodic rollback once the WAL's min age has
// passed. Background work is let finish first: in the time it stands for,
// it would have.
func (m *model) rollbackManager(strict bool) {
	m.settle()
	o := handleOn(m.ctx, m.b, &logical.Request{Operation: logical.RollbackOperation, Storage: m.view, Data: map[string]any{"immediate": true}})
	if strict && !o.ok() {
		m.fatalf("Vault's rollback manager fails with a healthy upstream and storage: %s", o)
	}
}

// CallerMistake sends a request an operator or application gets wrong: it
// must be answered with a 4xx that changes nothing, never a 5xx.
func (m *model) CallerMistake(t *rapid.T) {
	config, project := m.mistakeContext(t)
	m.mistake(t, []callerMistake{
		{logical.UpdateOperation, "roles/bad-ttl", map[string]any{"config": config, "project_id": project, "ttl": -5}},
		{logical.UpdateOperation, "roles/ttl-over-max", map[string]any{"config": config, "project_id": project, "ttl": 7200, "max_ttl": 60}},
		{logical.UpdateOperation, "roles/no-such-project", map[string]any{"config": config, "project_id": "prj_does_not_exist"}},
		{logical.UpdateOperation, "roles/no-such-config", map[string]any{"config": "nope", "project_id": project}},
		{logical.ReadOperation, "creds/no-such-role", nil},
		{logical.UpdateOperation, "rotate-role/no-such-role", nil},
		{logical.ReadOperation, "static-creds/no-such-role", nil},
		{logical.UpdateOperation, "static-roles/too-fast", map[string]any{"config": config, "project_id": project, "rotation_period": 1}},
		{logical.UpdateOperation, "static-roles/no-such-key", map[string]any{"config": config, "project_id": project, "rotation_period": 60, "key_id": "key_does_not_exist"}},
		{logical.UpdateOperation, "static-roles/no-policy", map[string]any{"config": config, "project_id": project}},
		{logical.UpdateOperation, "static-roles/no-such-project", map[string]any{"config": config, "project_id": "prj_does_not_exist", "rotation_period": 60}},
		{logical.UpdateOperation, "static-roles/no-such-config", map[string]any{"config": "nope", "project_id": project, "rotation_period": 60}},
		{logical.UpdateOperation, "tidy", map[string]any{"min_age": -5}},
		{logical.UpdateOperation, "tidy", map[string]any{"config": "nope"}},
		{logical.UpdateOperation, "config/no-provider", map[string]any{"management_key": "x"}},
		{logical.UpdateOperation, "config/" + config, map[string]any{"request_timeout": -1}},
	})
}

// BadName uses a name with "..", which Vault's storage refuses.
func (m *model) BadName(t *rapid.T) {
	config, project := m.mistakeContext(t)
	m.mistake(t, []callerMistake{
		{logical.UpdateOperation, "roles/a..b", map[string]any{"config": config, "project_id": project}},
		{logical.ReadOperation, "roles/a..b", nil},
		{logical.ReadOperation, "creds/a..b", nil},
		{logical.UpdateOperation, "config/a..b", m.configData("A")},
		{logical.UpdateOperation, "static-roles/a..b", map[string]any{"config": config, "project_id": project, "rotation_period": 60}},
		{logical.ReadOperation, "static-creds/a..b", nil},
		{logical.UpdateOperation, "rotate-role/a..b", nil},
		{logical.UpdateOperation, "tidy", map[string]any{"config": "a..b"}},
		{logical.UpdateOperation, "roles/" + roleNames[0], map[string]any{"config": "a..b"}},
	})
}

type callerMistake struct {
	op   logical.Operation
	path string
	data map[string]any
}

func (m *model) mistakeContext(t *rapid.T) (config, project string) {
	config = rapid.SampledFrom(configNames).Draw(t, "config")
	project = m.accounts["A"].projects[0]
	if acct := m.configs[config]; acct != "" {
		project = m.projectsOf(acct)[0]
	}
	return config, project
}

// mistake sends one request an operator or application gets wrong: it must
// be answered with a 4xx that changes nothing, never a 5xx.
func (m *model) mistake(t *rapid.T, mistakes []callerMistake) {
	mk := rapid.SampledFrom(mistakes).Draw(t, "mistake")
	o := m.request(mk.op, mk.path, mk.data)
	if o.failed500() && !m.faultActive() {
		m.fatalf("I3: caller mistake answered with a 5xx: %s %v", o, mk.data)
	}
	if o.ok() && (mk.op != logical.ReadOperation || o.resp != nil) {
		m.fatalf("I3: caller mistake accepted: %s %v", o, mk.data)
	}
}

// ---------------------------------------------------------------------------
// Invariants.

// Check runs after every step: the end of fault windows, Vault's expiry
// and revoke retries, rotations the step made, then the invariants.
func (m *model) Check(*rapid.T) {
	smSteps.Add(1)
	m.afterStep()
	// The next step starts here.
	m.stepHits = m.store.hitCount()
	m.stopped = false
	m.healthyTick = false
}

func (m *model) afterStep() {
	m.land()
	m.checkNothingAfterClean()
	if m.faultActive() {
		m.lastFault = m.now()
	}
	if m.store.hitCount() > m.stepHits || m.stopped {
		m.unresolved = true
		// A write whose outcome is unknown: learn roles and connections
		// back from the engine (static roles: syncStatics, by intent).
		for _, name := range configNames {
			m.resyncConfig(name)
		}
		for _, name := range roleNames {
			m.resyncRole(name)
		}
	}
	m.store.disarmStep()
	if m.storageSteps > 0 {
		if m.storageSteps--; m.storageSteps == 0 {
			m.store.disarmAll()
			m.store.setDelay(smNoDelay)
		}
	}
	if m.faultSteps > 0 {
		if m.faultSteps--; m.faultSteps == 0 {
			m.clearUpstreamFaults()
		}
	}
	m.expireLeases()
	m.syncStatics()
	m.snapshotUpstream()
	m.checkHeldKeysExist()
	m.checkInventory(false)
	if m.healthyTick {
		m.checkOverlapsEnded()
	}
	m.checkNoSlotOutlivesItsRequest()
	m.prunePrevious()
}

// checkNoSlotOutlivesItsRequest: between steps no issuance runs, so no
// max_keys slot is held; one left over would refuse a later issuance that
// max_keys allows.
func (m *model) checkNoSlotOutlivesItsRequest() {
	m.b.liveCounts.mu.Lock()
	defer m.b.liveCounts.mu.Unlock()
	if len(m.b.liveCounts.slots) != 0 {
		m.fatalf("max_keys slots held after their requests ended: %v", m.b.liveCounts.slots)
	}
}

// held returns the keys the engine must not delete: live leases', static
// roles' current keys and previous keys in their overlap, released keys
// and keys made outside Vault.
func (m *model) held() map[heldKey]string {
	now := m.now()
	held := map[heldKey]string{}
	for _, l := range m.leases {
		if !l.revoking {
			held[l.key] = "key of a live lease of role " + l.role
		}
	}
	for name, s := range m.statics {
		held[s.current] = "current key of static role " + name
		for _, p := range s.previous {
			if now.Before(p.until) {
				held[p.key] = fmt.Sprintf("previous key of static role %s, overlap until %s", name, p.until.Format(time.RFC3339))
			}
		}
	}
	for k := range m.released {
		held[k] = "key released by a static role deleted with delete_key_on_remove=false"
	}
	for k := range m.foreign {
		held[k] = "key made outside Vault"
	}
	for k := range m.maybeGone {
		delete(held, k)
	}
	return held
}

// checkHeldKeysExist is I1.
func (m *model) checkHeldKeysExist() {
	held := m.held()
	for _, k := range m.sortedHeld(held) {
		why := held[k]
		if _, found := m.accounts[k.account].fake.Key(k.id); !found {
			m.fatalf("I1: %s (%s in account %s) was deleted upstream", k.id, why, k.account)
		}
	}
}

// mountMarker is the mount's marker, once the engine made one.
func (m *model) mountMarker() string {
	if m.marker == "" {
		marker, err := m.b.mountMarker(observing(m.ctx), m.view)
		if err != nil {
			m.fatalf("mount marker: %v", err)
		}
		m.marker = marker
	}
	return m.marker
}

func (m *model) marked(name string) bool {
	mk, _, ok := parseKeyName(name)
	return ok && mk == m.mountMarker()
}

// snapshotUpstream numbers every key upstream, and puts the marked keys
// that nobody holds in limbo.
func (m *model) snapshotUpstream() {
	claimed := map[heldKey]bool{}
	for _, l := range m.leases {
		claimed[l.key] = true
	}
	for _, s := range m.statics {
		for _, k := range s.keys() {
			claimed[k] = true
		}
	}
	for _, acct := range sortedKeys(m.accounts) {
		for _, p := range m.accounts[acct].fake.Projects() {
			if _, ok := m.projectNo[p.ID]; !ok {
				m.projectNo[p.ID] = len(m.projectNo)
			}
		}
		present := map[string]bool{}
		for _, k := range m.accounts[acct].fake.Keys() {
			hk := m.see(heldKey{acct, k.ID})
			present[k.ID] = true
			if !claimed[hk] && !m.released[hk] && !m.foreign[hk] && !m.revoked[hk] && m.marked(k.Name) {
				m.limbo[hk] = true
			}
		}
		for k := range m.limbo {
			if k.account == acct && !present[k.id] {
				delete(m.limbo, k)
			}
		}
	}
}

// listedKey is one entry of LIST keys/.
type listedKey struct {
	key     heldKey
	kind    string
	role    string
	project string
}

// listKeys lists keys/ as an operator does; no id may appear twice.
func (m *model) listKeys() []listedKey {
	o := m.observe(logical.ListOperation, "keys/", nil)
	if o.failed500() || (o.resp != nil && o.resp.IsError()) {
		m.fatalf("I4: listing keys/: %s", o)
	}
	if o.resp == nil {
		return nil
	}
	ids, _ := o.resp.Data["keys"].([]string)
	info, _ := o.resp.Data["key_info"].(map[string]any)
	seen := map[string]bool{}
	var out []listedKey
	for _, id := range ids {
		if seen[id] {
			m.fatalf("I4: keys/ lists %s twice", id)
		}
		seen[id] = true
		entry, _ := info[id].(map[string]any)
		config, _ := entry["config"].(string)
		lk := listedKey{key: heldKey{m.configs[config], id}}
		lk.kind, _ = entry["kind"].(string)
		lk.role, _ = entry["role"].(string)
		lk.project, _ = entry["project_id"].(string)
		// The listing names a connection, not an account: the key's
		// account is where the model saw it (ids are unique).
		for _, acct := range sortedKeys(m.accounts) {
			if _, seen := m.seen[heldKey{acct, id}]; seen {
				lk.key.account = acct
			}
		}
		out = append(out, lk)
	}
	return out
}

// checkInventory is I4: keys/ lists the leases' keys and static roles'
// current and overlapping keys; a previous key whose overlap ended may
// linger until the scheduler deletes it. While a storage fault is
// unresolved only duplicates are checked (strict: after a Heal, limbo keys
// the engine still tracks may be listed too).
func (m *model) checkInventory(strict bool) {
	listed := map[string]listedKey{}
	for _, k := range m.listKeys() {
		listed[k.key.id] = k
	}
	if m.unresolved && !strict {
		return
	}
	now := m.now()
	required := map[string]string{}
	optional := map[string]bool{}
	for _, l := range m.leases {
		if l.revoking {
			optional[l.key.id] = true
		} else {
			required[l.key.id] = "live lease of role " + l.role
		}
	}
	for name, s := range m.statics {
		required[s.current.id] = "current key of static role " + name
		for _, p := range s.previous {
			_, upstream := m.accounts[p.key.account].fake.Key(p.key.id)
			switch {
			case now.Before(p.until):
				required[p.key.id] = "previous key of static role " + name + " in its overlap"
			case upstream && !m.maybeGone[p.key]:
				// The engine deletes a replaced key upstream before it
				// forgets it: while it is there, keys/ shows it.
				required[p.key.id] = "previous key of static role " + name + " past its overlap, not yet deleted upstream"
			default:
				optional[p.key.id] = true
			}
		}
	}
	for k := range m.maybeGone {
		delete(required, k.id)
		optional[k.id] = true
	}
	for k := range m.tracked {
		optional[k.id] = true
	}
	if strict {
		for k := range m.limbo {
			optional[k.id] = true
		}
	}
	for _, id := range m.rankIDs(sortedKeys(required)) {
		if _, ok := listed[id]; !ok {
			m.fatalf("I4: keys/ lacks %s (%s)", id, required[id])
		}
	}
	for _, id := range sortedByKey(listed, func(k listedKey) int { return m.seen[k.key] }) {
		if _, ok := required[id]; !ok && !optional[id] {
			k := listed[id]
			m.fatalf("I4: keys/ lists %s (kind %q, role %q, project %q), which the mount does not hold", id, k.kind, k.role, k.project)
		}
	}
}

// checkOverlapsEnded: after a tick with nothing failing, every previous key
// whose overlap ended is gone upstream, unless the engine says its delete
// failed and when it retries.
func (m *model) checkOverlapsEnded() {
	now := m.now()
	if now.Before(m.lastFault.Add(rotationBackoffMax)) {
		return // a back-off from a recent fault may still hold the role
	}
	for _, name := range sortedKeys(m.statics) {
		s := m.statics[name]
		if m.configs[s.config] != s.account {
			continue // the scheduler cannot reach the key's account
		}
		read := m.observe(logical.ReadOperation, "static-roles/"+name, nil)
		retry := map[string]time.Time{}
		if read.ok() && read.resp != nil {
			list, _ := read.resp.Data["previous_keys"].([]map[string]any)
			for _, p := range list {
				at, _ := time.Parse(time.RFC3339, fmt.Sprint(p["delete_retry_at"]))
				retry[fmt.Sprint(p["key_id"])] = at
			}
		}
		for _, p := range s.previous {
			if now.Before(p.until) || now.Before(retry[p.key.id]) || m.maybeGone[p.key] {
				continue
			}
			if _, found := m.accounts[p.key.account].fake.Key(p.key.id); found {
				m.fatalf("previous key %s of static role %s outlived its overlap (ended %s) past a healthy tick at %s",
					p.key.id, name, p.until.Format(time.RFC3339), now.Format(time.RFC3339))
			}
		}
	}
}

// prunePrevious forgets previous keys that ended their overlap and are gone.
func (m *model) prunePrevious() {
	now := m.now()
	for _, s := range m.statics {
		s.previous = slices.DeleteFunc(s.previous, func(p modelPreviousKey) bool {
			_, found := m.accounts[p.key.account].fake.Key(p.key.id)
			return !found && !now.Before(p.until)
		})
	}
}

// checkCleanupLeavesNothing is I2: with healthy upstreams, revoke every
// lease, let every min age and max TTL pass, tidy once: only static roles'
// keys and released keys may still carry the mount's marker, and no marked
// project is left.
func (m *model) checkCleanupLeavesNothing() {
	m.heal()
	for attempt := 0; attempt < 3 && len(m.leases) > 0; attempt++ {
		for _, l := range slices.Clone(m.leases) {
			m.revokeNow(l)
		}
	}
	if len(m.leases) > 0 {
		m.fatalf("I2: %d leases cannot be revoked with a healthy upstream", len(m.leases))
	}
	// Past every max TTL and tidy's grace: keys whose answer Vault lost
	// expire too.
	m.clock.Advance(100 * time.Hour)
	m.settle()
	if o := m.request(logical.UpdateOperation, "tidy", nil); !o.ok() {
		m.fatalf("I2: final tidy: %s", o)
	}
	allowed := map[heldKey]bool{}
	for k := range m.released {
		allowed[k] = true
	}
	for _, s := range m.statics {
		for _, k := range s.keys() {
			allowed[k] = true
		}
	}
	for _, acct := range sortedKeys(m.accounts) {
		for _, k := range m.accounts[acct].fake.Keys() {
			if m.marked(k.Name) && !allowed[heldKey{acct, k.ID}] {
				m.fatalf("I2: key %s (%s) in account %s survived revocation of every lease and tidy", k.ID, k.Name, acct)
			}
		}
		for _, p := range m.accounts[acct].fake.Projects() {
			if m.marked(p.Name) {
				m.fatalf("I2: per-lease project %s (%s) in account %s survived revocation of every lease and tidy", p.ID, p.Name, acct)
			}
		}
	}
	m.checkHeldKeysExist()
	m.snapshotUpstream()
	clear(m.tracked)
	m.checkInventory(true)
	m.checkKeyReads()
}

// sortedByKey orders a map's keys by a stable rank of its values.
func sortedByKey[V any](in map[string]V, rank func(V) int) []string {
	keys := make([]string, 0, len(in))
	for k := range in {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		ri, rj := rank(in[keys[i]]), rank(in[keys[j]])
		return ri < rj || (ri == rj && keys[i] < keys[j])
	})
	return keys
}

func sortedKeys[V any](in map[string]V) []string {
	keys := make([]string, 0, len(in))
	for k := range in {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Failure messages must come out the same when rapid replays a sequence,
// or it cannot shrink it: upstream ids, key names, WAL ids and ports are
// random, so they are replaced by stable labels (keys and projects by the
// order the model first saw them).
var (
	smKeyID     = regexp.MustCompile(`key_[a-z2-7]{20}`)
	smProjectID = regexp.MustCompile(`prj_[a-z2-7]{20}`)
	smKeyValue  = regexp.MustCompile(`sk_[a-z2-7]{32}`)
	smKeyName   = regexp.MustCompile(`vault-[a-z0-9]+-([0-9]+)-[a-z0-9]+-`)
	smUUID      = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	smPort      = regexp.MustCompile(`127\.0\.0\.1:[0-9]+`)
	smRequestID = regexp.MustCompile(`"request_id":"[a-z2-7]+"`)
)

func (m *model) fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	msg = smKeyID.ReplaceAllStringFunc(msg, func(id string) string {
		for _, acct := range sortedKeys(m.accounts) {
			if n, ok := m.seen[heldKey{acct, id}]; ok {
				return "key#" + strconv.Itoa(n)
			}
		}
		return "key#?"
	})
	msg = smProjectID.ReplaceAllStringFunc(msg, func(id string) string {
		if n, ok := m.projectNo[id]; ok {
			return "prj#" + strconv.Itoa(n)
		}
		return "prj#?"
	})
	msg = smKeyValue.ReplaceAllString(msg, "sk_*")
	msg = smKeyName.ReplaceAllString(msg, "vault-<marker>-$1-<nonce>-")
	msg = smUUID.ReplaceAllString(msg, "<uuid>")
	msg = smPort.ReplaceAllString(msg, "127.0.0.1:<port>")
	msg = smRequestID.ReplaceAllString(msg, `"request_id":"<id>"`)
	m.t.Fatal(msg)
}

// idRank is when the model first saw a key id.
func (m *model) idRank(id string) int {
	for _, acct := range sortedKeys(m.accounts) {
		if n, ok := m.seen[heldKey{acct, id}]; ok {
			return n
		}
	}
	return len(m.seen)
}

// rankIDs orders key ids as the model first saw them.
func (m *model) rankIDs(ids []string) []string {
	slices.SortStableFunc(ids, func(a, b string) int { return m.idRank(a) - m.idRank(b) })
	return ids
}

// sortedHeld orders keys as the model first saw them.
func (m *model) sortedHeld(keys map[heldKey]string) []heldKey {
	out := make([]heldKey, 0, len(keys))
	for k := range keys {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b heldKey) int { return m.seen[a] - m.seen[b] })
	return out
}

// checkNothingAfterClean: Vault may hand the mount's storage to the next
// instance once Clean returns, so an instance reloaded makes no storage
// call after it (I3: background work is waited for). Views are watched for
// a few steps, long enough for work Clean left behind to show.
func (m *model) checkNothingAfterClean() {
	for _, v := range m.cleaned {
		if call := v.usedAfterCleanup(); call != "" {
			m.fatalf("I3: an instance reloaded still used storage after its Clean returned (%s): work in flight was not waited for", call)
		}
	}
	if len(m.cleaned) > 3 {
		m.cleaned = m.cleaned[len(m.cleaned)-3:]
	}
}
