package carbon

// A model-based state-machine test: rapid drives the backend in-process
// through random sequences of operator, application and Vault actions
// (configs, roles, issue/renew/revoke/expiry, static roles, rotation,
// scheduler ticks, tidy, mount tuning, restarts, clock jumps, upstream
// faults, caller mistakes) and checks the safety invariants of DESIGN.md
// after every step:
//
//	I1  no key that is held (live lease, static current key, previous key
//	    during its overlap, released or foreign key) disappears upstream;
//	I3  no panic, no 5xx for a caller's mistake or, without faults, at all;
//	I4  keys/ lists exactly what the mount holds;
//
// and I2 at the end of each sequence: after every lease is revoked and one
// tidy has run, only static roles' keys and released keys carry the marker.
//
// Knobs (environment): CARBON_SM_CHECKS, CARBON_SM_SEED, CARBON_SM_STEPS,
// CARBON_SM_DURATION (soak: loop until it ends, with fresh seeds),
// CARBON_SM_SKIP (comma-separated action names left out, to explore past a
// known bug). The -rapid.* flags win over the environment.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
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
	// Fault windows make steps slow (timeouts of 1s, Retry-After of 1s);
	// this many steps after a fault action the fakes are healthy again.
	smFaultSteps = 2
)

var (
	smSequences atomic.Int64
	smSteps     atomic.Int64
)

func TestStateMachine(t *testing.T) {
	setRapidFlag("rapid.checks", "CARBON_SM_CHECKS", strconv.Itoa(smDefaultChecks))
	setRapidFlag("rapid.steps", "CARBON_SM_STEPS", "")
	duration, _ := time.ParseDuration(os.Getenv("CARBON_SM_DURATION"))
	start := time.Now()
	defer func() {
		t.Logf("state machine: %d sequences, %d steps in %s", smSequences.Load(), smSteps.Load(), time.Since(start).Round(time.Second))
	}()
	if duration <= 0 {
		setRapidFlag("rapid.seed", "CARBON_SM_SEED", strconv.Itoa(smDefaultSeed))
		rapid.Check(t, runSequence)
		return
	}
	// Soak: every round gets a fresh seed, so rounds explore new sequences.
	base, _ := strconv.ParseUint(os.Getenv("CARBON_SM_SEED"), 10, 64)
	if base == 0 {
		base = uint64(time.Now().UnixNano())
	}
	for round := uint64(0); time.Since(start) < duration; round++ {
		_ = flag.Set("rapid.seed", strconv.FormatUint(base+round*1_000_003, 10))
		rapid.Check(t, runSequence)
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

func runSequence(t *rapid.T) {
	smSequences.Add(1)
	m := newModel(t)
	defer m.close()
	actions := map[string]func(*rapid.T){
		"WriteConfig":        m.WriteConfig,
		"DeleteConfig":       m.DeleteConfig,
		"WriteRole":          m.WriteRole,
		"DeleteRole":         m.DeleteRole,
		"Issue":              m.Issue,
		"Renew":              m.Renew,
		"Revoke":             m.Revoke,
		"CreateStaticRole":   m.CreateStaticRole,
		"AdoptKey":           m.AdoptKey,
		"AdoptOwnedKey":      m.AdoptOwnedKey,
		"UpdateStaticRole":   m.UpdateStaticRole,
		"DeleteStaticRole":   m.DeleteStaticRole,
		"RotateRole":         m.RotateRole,
		"SchedulerTick":      m.SchedulerTick,
		"Tidy":               m.Tidy,
		"TuneMount":          m.TuneMount,
		"Restart":            m.Restart,
		"AdvanceClock":       m.AdvanceClock,
		"UpstreamFault":      m.UpstreamFault,
		"CallerMistake":      m.CallerMistake,
		"BadName":            m.BadName,
		"ReadStaticCreds":    m.ReadStaticCreds,
		"IssueUntilMaxKeys":  m.IssueUntilMaxKeys,
		"RenewAfterMaxRaise": m.RenewAfterMaxRaise,
	}
	for _, name := range strings.Split(os.Getenv("CARBON_SM_SKIP"), ",") {
		delete(actions, strings.TrimSpace(name))
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
}

// ---------------------------------------------------------------------------
// The model.

// heldKey names an upstream key in one account.
type heldKey struct {
	account string
	id      string
}

type modelLease struct {
	secret    *logical.Secret
	role      string
	config    string
	key       heldKey
	perLease  bool
	issued    time.Time // fake clock
	expires   time.Time // fake clock, as Vault's expiration manager keeps it
	revokeErr bool      // a revoke failed: Vault retries it on later steps
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

type model struct {
	t       *rapid.T
	ctx     context.Context
	clock   *fakeClock
	sys     *tunableSystemView
	storage logical.Storage
	b       *backend

	accounts map[string]*account
	foreign  map[heldKey]bool // keys made outside Vault, not adopted

	configs  map[string]string // config name -> account name
	retries  map[string]int
	roles    map[string]*modelRole
	leases   []*modelLease
	statics  map[string]*modelStaticRole
	released map[heldKey]bool
	// maybeGone: keys a failed static-role delete may have deleted; no
	// longer promised in either direction.
	maybeGone map[heldKey]bool

	// seen numbers keys in the order the model first saw them: upstream
	// ids are random, and draws must not depend on them to replay.
	seen map[heldKey]int

	faultSteps int
	// rotatedBy is the static role a step rotated on request, so the
	// after-step sync does not mistake it for the scheduler.
	rotatedBy string
}

var configNames = []string{"cq1", "cq2"}
var roleNames = []string{"dyn1", "dyn2"}
var staticNames = []string{"st1", "st2"}

func newModel(t *rapid.T) *model {
	clock := &fakeClock{now: time.Now().UTC().Truncate(time.Second)}
	m := &model{
		t:         t,
		ctx:       context.Background(),
		clock:     clock,
		storage:   vaultStorage{&logical.InmemStorage{}},
		accounts:  map[string]*account{},
		foreign:   map[heldKey]bool{},
		configs:   map[string]string{},
		retries:   map[string]int{},
		roles:     map[string]*modelRole{},
		statics:   map[string]*modelStaticRole{},
		released:  map[heldKey]bool{},
		maybeGone: map[heldKey]bool{},
		seen:      map[heldKey]int{},
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
	m.b = m.startBackend()
	return m
}

func (m *model) startBackend() *backend {
	conf := logical.TestBackendConfig()
	conf.StorageView = m.storage
	conf.System = m.sys
	conf.Logger = logging.NewVaultLogger(hclog.LevelFromString(envOr("CARBON_TEST_LOG", "off")))
	raw, err := Factory(m.ctx, conf)
	if err != nil {
		m.t.Fatalf("Factory: %v", err)
	}
	b := raw.(*backend)
	b.clock = m.clock.Now
	b.schedulerTick = 0
	if err := b.initialize(m.ctx, &logical.InitializationRequest{Storage: m.storage}); err != nil {
		m.t.Fatalf("initialize: %v", err)
	}
	return b
}

func (m *model) close() {
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

func (m *model) faultActive() bool { return m.faultSteps > 0 }

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

func (m *model) request(op logical.Operation, path string, data map[string]any) outcome {
	req := &logical.Request{Operation: op, Path: path, Data: data, Storage: m.storage, DisplayName: "token-sm"}
	if op == logical.CreateOperation || op == logical.UpdateOperation {
		// Vault picks create or update by the existence check.
		ok, exists, err := m.b.HandleExistenceCheck(m.ctx, req)
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
	return m.handle(req)
}

func (m *model) handle(req *logical.Request) outcome {
	resp, err := m.b.HandleRequest(m.ctx, req)
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

// expect fails the step on a 5xx, which Vault answers only for the
// engine's own failures: allowed only while the upstream misbehaves or when
// allow500 says the upstream was asked something it cannot do.
func (m *model) expectNo500(o outcome, allow500 bool) {
	if o.failed500() && !m.faultActive() && !allow500 {
		m.t.Fatalf("I3: %s without an upstream fault", o)
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
func (m *model) WriteConfig(t *rapid.T) {
	name := rapid.SampledFrom(configNames).Draw(t, "config")
	acct := rapid.SampledFrom([]string{"A", "B"}).Draw(t, "account")
	data := m.configData(acct)
	data["max_retries"] = rapid.IntRange(0, 1).Draw(t, "max_retries")
	o := m.request(logical.UpdateOperation, "config/"+name, data)
	m.expectNo500(o, false)
	switch {
	case o.ok():
		m.configs[name] = acct
	case !m.faultActive():
		// verify_connection is the only upstream call; without faults a
		// re-point may still be refused while the connection is in use.
		if _, exists := m.configs[name]; !exists || m.configs[name] == acct {
			m.t.Fatalf("valid config write refused: %s", o)
		}
	}
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

func (m *model) DeleteConfig(t *rapid.T) {
	name := rapid.SampledFrom(configNames).Draw(t, "config")
	o := m.request(logical.DeleteOperation, "config/"+name, nil)
	m.expectNo500(o, false)
	if m.configInUse(name) {
		if o.ok() {
			m.t.Fatalf("config/%s deleted while in use (roles, leases or static roles need it)", name)
		}
		return
	}
	// Not in use by the model's count; the engine may still refuse (a
	// pending WAL entry needs the connection).
	if o.ok() {
		delete(m.configs, name)
	}
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

func (m *model) WriteRole(t *rapid.T) {
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
	o := m.request(logical.UpdateOperation, "roles/"+name, data)
	m.expectNo500(o, false)
	switch {
	case o.ok() && !valid:
		m.t.Fatalf("invalid role accepted (config exists %v, ttl %s, max_ttl %s, project %q): %s", configExists, r.ttl, r.maxTTL, r.project, o)
	case o.ok():
		m.roles[name] = r
	case valid && !m.faultActive():
		m.t.Fatalf("valid role write refused: %s", o)
	}
}

func (m *model) DeleteRole(t *rapid.T) {
	name := rapid.SampledFrom(roleNames).Draw(t, "role")
	o := m.request(logical.DeleteOperation, "roles/"+name, nil)
	m.expectNo500(o, false)
	if !o.ok() {
		m.t.Fatalf("role delete failed: %s", o)
	}
	delete(m.roles, name)
}

func (m *model) liveKeysOfRole(role string) int {
	n := 0
	for _, l := range m.leases {
		if l.role == role {
			n++
		}
	}
	return n
}

// Issue reads creds/<role>, as an application does.
func (m *model) Issue(t *rapid.T) {
	m.issue(rapid.SampledFrom(roleNames).Draw(t, "role"))
}

func (m *model) issue(name string) {
	r := m.roles[name]
	o := m.request(logical.ReadOperation, "creds/"+name, nil)
	if r == nil {
		if !o.refused() {
			m.t.Fatalf("creds of a missing role: want a 4xx, got %s", o)
		}
		return
	}
	acct := m.configs[r.config]
	projectElsewhere := !r.perLease && !slices.Contains(m.projectsOf(acct), r.project)
	m.expectNo500(o, projectElsewhere)
	capped := r.maxKeys > 0 && m.liveKeysOfRole(name) >= r.maxKeys
	switch {
	case o.ok() && capped:
		m.t.Fatalf("role %s issued beyond max_keys=%d (%d live)", name, r.maxKeys, m.liveKeysOfRole(name))
	case !o.ok() && !capped && !m.faultActive() && !projectElsewhere:
		m.t.Fatalf("issuance failed without a fault: %s", o)
	case !o.ok():
		return
	}
	keyID, _ := o.resp.Data["key_id"].(string)
	project, _ := o.resp.Data["project_id"].(string)
	key := m.see(heldKey{acct, keyID})
	if _, found := m.accounts[acct].fake.Key(keyID); !found {
		m.t.Fatalf("issued key %s is not in account %s", keyID, acct)
	}
	switch {
	case r.perLease && slices.Contains(m.allProjects(), project):
		m.t.Fatalf("role %s is project_per_lease but issued into shared project %s (stale role?)", name, project)
	case !r.perLease && project != r.project:
		m.t.Fatalf("role %s issued into project %s, want %s (stale role?)", name, project, r.project)
	case o.resp.Secret.TTL != r.ttl:
		m.t.Fatalf("role %s lease ttl %s, want the role's %s (stale role?)", name, o.resp.Secret.TTL, r.ttl)
	}
	now := m.now()
	m.leases = append(m.leases, &modelLease{
		secret:   o.resp.Secret,
		role:     name,
		config:   r.config,
		key:      key,
		perLease: r.perLease,
		issued:   now,
		expires:  now.Add(m.vaultLeaseTTL(o.resp.Secret.TTL, o.resp.Secret.MaxTTL)),
	})
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
		m.issue(name)
	}
}

func (m *model) pickLease(t *rapid.T) *modelLease {
	if len(m.leases) == 0 {
		t.Skip("no live lease")
	}
	return m.leases[rapid.IntRange(0, len(m.leases)-1).Draw(t, "lease")]
}

// Renew renews a lease as Vault's expiration manager does.
func (m *model) Renew(t *rapid.T) {
	l := m.pickLease(t)
	increment := rapid.SampledFrom([]time.Duration{0, 10 * time.Minute, time.Hour, 6 * time.Hour}).Draw(t, "increment")
	m.renew(l, increment)
}

func (m *model) renew(l *modelLease, increment time.Duration) {
	if !m.now().Before(l.expires) {
		return // Vault does not renew an expired lease
	}
	s := *l.secret
	s.Increment = increment
	// CalculateTTL measures elapsed time with the real clock from IssueTime.
	s.IssueTime = time.Now().Add(-m.now().Sub(l.issued))
	o := m.handle(&logical.Request{Operation: logical.RenewOperation, Storage: m.storage, Secret: &s})
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
	if !o.ok() {
		return
	}
	ttl := o.resp.Secret.TTL
	if ttl > m.sys.MaxLeaseTTL() {
		ttl = m.sys.MaxLeaseTTL()
	}
	l.expires = m.now().Add(ttl)
	l.secret.TTL = o.resp.Secret.TTL
}

// RenewAfterMaxRaise raises a role's max_ttl and renews one of its leases
// past the max_ttl it was issued under: the lease outlives the inventory's
// first expiry estimate.
func (m *model) RenewAfterMaxRaise(t *rapid.T) {
	l := m.pickLease(t)
	r := m.roles[l.role]
	if r == nil || l.revokeErr {
		t.Skip("lease's role is gone")
	}
	data := map[string]any{"max_ttl": int((48 * time.Hour).Seconds()), "ttl": int(time.Hour.Seconds())}
	o := m.request(logical.UpdateOperation, "roles/"+l.role, data)
	m.expectNo500(o, false)
	if !o.ok() {
		return
	}
	r.maxTTL, r.ttl = 48*time.Hour, time.Hour
	m.renew(l, time.Hour)
}

func (m *model) Revoke(t *rapid.T) {
	l := m.pickLease(t)
	m.revoke(l)
}

// revoke revokes a lease as Vault does; a failed revoke leaves it live, to
// be retried.
func (m *model) revoke(l *modelLease) bool {
	s := *l.secret
	o := m.handle(&logical.Request{Operation: logical.RevokeOperation, Storage: m.storage, Secret: &s})
	m.expectNo500(o, m.configs[l.config] == "")
	if !o.ok() {
		l.revokeErr = true
		return false
	}
	m.leases = slices.DeleteFunc(m.leases, func(x *modelLease) bool { return x == l })
	return true
}

// expireLeases revokes what has expired and retries failed revokes, as
// Vault's expiration manager does.
func (m *model) expireLeases() {
	now := m.now()
	for _, l := range slices.Clone(m.leases) {
		if l.revokeErr || !now.Before(l.expires) {
			m.revoke(l)
		}
	}
}

// ---------------------------------------------------------------------------
// Actions: static roles.

// staticParams draws a rotation policy; valid says whether the engine
// must accept it.
func (m *model) staticParams(t *rapid.T, s *modelStaticRole) (map[string]any, bool) {
	data := map[string]any{}
	mode := rapid.SampledFrom([]string{"period", "period", "schedule", "manual"}).Draw(t, "mode")
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

func (m *model) CreateStaticRole(t *rapid.T) {
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
	data, valid := m.staticParams(t, s)
	data["config"], data["project_id"] = config, s.project
	m.createStatic(name, s, data, valid && s.account != "" && slices.Contains(m.projectsOf(s.account), s.project))
}

// AdoptKey creates a static role that adopts an existing key: one made
// outside Vault or released (allowed), or one the mount holds (must be
// refused: two owners would delete it under each other).
func (m *model) AdoptKey(t *rapid.T)      { m.adopt(t, false) }
func (m *model) AdoptOwnedKey(t *rapid.T) { m.adopt(t, true) }

func (m *model) adopt(t *rapid.T, owned bool) {
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
		if !l.perLease {
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
		o := m.request(logical.CreateOperation, "static-roles/"+name, data)
		if o.ok() {
			m.t.Fatalf("I1: static role %s adopted key %s that the mount already holds", name, c.key.id)
		}
		m.expectNo500(o, false)
		return
	}
	if m.createStatic(name, s, data, valid) && s.current != c.key {
		m.t.Fatalf("static role %s adopted %s but holds %s", name, c.key.id, s.current.id)
	}
}

// createStatic writes a new static role and records its key.
func (m *model) createStatic(name string, s *modelStaticRole, data map[string]any, valid bool) bool {
	o := m.request(logical.CreateOperation, "static-roles/"+name, data)
	m.expectNo500(o, false)
	switch {
	case o.ok() && !valid:
		m.t.Fatalf("invalid static role accepted: %v", data)
	case !o.ok():
		if valid && !m.faultActive() {
			m.t.Fatalf("valid static role refused: %s", o)
		}
		return false
	}
	read := m.request(logical.ReadOperation, "static-roles/"+name, nil)
	if !read.ok() || read.resp == nil {
		m.t.Fatalf("reading the new static role: %s", read)
	}
	s.current = m.see(heldKey{s.account, read.resp.Data["key_id"].(string)})
	s.lastRotated = m.now()
	if _, found := m.accounts[s.account].fake.Key(s.current.id); !found {
		m.t.Fatalf("static role %s key %s is not upstream", name, s.current.id)
	}
	delete(m.foreign, s.current)
	delete(m.released, s.current)
	m.statics[name] = s
	return true
}

func (m *model) applyStaticParams(dst, src *modelStaticRole) {
	dst.period, dst.schedule, dst.window, dst.manual = src.period, src.schedule, src.window, src.manual
	dst.overlap, dst.deleteOnRemove = src.overlap, src.deleteOnRemove
}

// UpdateStaticRole changes the overlap, delete_key_on_remove and the period
// of an existing role.
func (m *model) UpdateStaticRole(t *rapid.T) {
	name := rapid.SampledFrom(staticNames).Draw(t, "static")
	s := m.statics[name]
	if s == nil {
		t.Skip("no such static role")
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
	o := m.request(logical.UpdateOperation, "static-roles/"+name, data)
	m.expectNo500(o, false)
	switch {
	case o.ok() && !valid:
		m.t.Fatalf("static role update with overlap %s >= interval %s accepted", next.overlap, interval)
	case o.ok():
		m.applyStaticParams(s, &next)
	case valid:
		m.t.Fatalf("valid static role update refused: %s", o)
	}
}

func (m *model) DeleteStaticRole(t *rapid.T) {
	name := rapid.SampledFrom(staticNames).Draw(t, "static")
	s := m.statics[name]
	o := m.request(logical.DeleteOperation, "static-roles/"+name, nil)
	m.expectNo500(o, s != nil && m.configs[s.config] != s.account)
	if s == nil {
		return
	}
	keys := []heldKey{s.current}
	for _, p := range s.previous {
		keys = append(keys, p.key)
	}
	switch {
	case o.ok():
		delete(m.statics, name)
		for _, k := range keys {
			if !s.deleteOnRemove {
				m.released[k] = true
			}
		}
	case o.failed500() && s.deleteOnRemove:
		// Part of the keys may be gone; the role stays.
		for _, k := range keys {
			m.maybeGone[k] = true
		}
	}
}

func (m *model) RotateRole(t *rapid.T) {
	name := rapid.SampledFrom(staticNames).Draw(t, "static")
	s := m.statics[name]
	m.rotatedBy = name
	o := m.request(logical.UpdateOperation, "rotate-role/"+name, nil)
	if s == nil {
		if !o.refused() {
			m.t.Fatalf("rotate-role of a missing role: want a 4xx, got %s", o)
		}
		return
	}
	m.expectNo500(o, m.configs[s.config] != s.account)
	if !o.ok() {
		s.failedRotate = true
		return
	}
	m.recordRotation(name, s, heldKey{s.account, o.resp.Data["key_id"].(string)})
}

func (m *model) recordRotation(name string, s *modelStaticRole, next heldKey) {
	if next == s.current {
		return
	}
	m.see(next)
	if _, found := m.accounts[next.account].fake.Key(next.id); !found {
		m.t.Fatalf("static role %s rotated to %s, which is not upstream", name, next.id)
	}
	now := m.now()
	s.previous = append(s.previous, modelPreviousKey{key: s.current, until: now.Add(s.overlap)})
	s.current, s.lastRotated, s.failedRotate = next, now, false
}

// ReadStaticCreds reads static-creds/<name>: the current key, never a 5xx.
func (m *model) ReadStaticCreds(t *rapid.T) {
	name := rapid.SampledFrom(staticNames).Draw(t, "static")
	o := m.request(logical.ReadOperation, "static-creds/"+name, nil)
	m.expectNo500(o, false)
	s := m.statics[name]
	if s == nil || !o.ok() {
		return
	}
	if id := o.resp.Data["key_id"]; id != s.current.id {
		m.t.Fatalf("static-creds/%s key_id %v, want %s", name, id, s.current.id)
	}
}

func (m *model) SchedulerTick(*rapid.T) { m.b.runDueRotations(m.storage) }

// syncStatics notices rotations the step made on its own (the scheduler)
// and checks they were allowed.
func (m *model) syncStatics() {
	now := m.now()
	for _, name := range sortedKeys(m.statics) {
		s := m.statics[name]
		o := m.request(logical.ReadOperation, "static-roles/"+name, nil)
		if !o.ok() || o.resp == nil {
			m.t.Fatalf("static role %s vanished: %s", name, o)
		}
		id, _ := o.resp.Data["key_id"].(string)
		if id == s.current.id {
			continue
		}
		if m.rotatedBy != name {
			switch {
			case s.manual:
				m.t.Fatalf("manual static role %s (disable_automated_rotation) was rotated by the scheduler", name)
			case s.period > 0 && now.Before(s.lastRotated.Add(s.period)) && !s.failedRotate:
				m.t.Fatalf("static role %s rotated at %s, before its period %s from %s", name, now, s.period, s.lastRotated)
			case s.schedule != "" && !inRotationWindow(s.schedule, s.window, now):
				m.t.Fatalf("static role %s rotated at %s, outside rotation_window %s of schedule %q", name, now.Format(time.RFC3339), s.window, s.schedule)
			}
		}
		m.recordRotation(name, s, heldKey{s.account, id})
	}
	m.rotatedBy = ""
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

func (m *model) Tidy(t *rapid.T) {
	data := map[string]any{"dry_run": rapid.Bool().Draw(t, "dry_run")}
	if minAge := rapid.SampledFrom([]int{-1, 0, 1, 30, 600}).Draw(t, "min_age"); minAge >= 0 {
		data["min_age"] = minAge
	}
	o := m.request(logical.UpdateOperation, "tidy", data)
	m.expectNo500(o, false)
	if !o.ok() {
		m.t.Fatalf("tidy refused: %s", o)
	}
}

func (m *model) TuneMount(t *rapid.T) {
	max := rapid.SampledFrom([]time.Duration{time.Hour, 4 * time.Hour, 24 * time.Hour, 72 * time.Hour}).Draw(t, "mount_max_ttl")
	def := rapid.SampledFrom([]time.Duration{10 * time.Minute, time.Hour}).Draw(t, "mount_default_ttl")
	m.sys.tune(min(def, max), max)
}

// Restart is a plugin reload: Clean, then a fresh backend on the same
// storage and mount.
func (m *model) Restart(*rapid.T) {
	m.b.clean(m.ctx)
	m.b = m.startBackend()
}

func (m *model) AdvanceClock(t *rapid.T) {
	d := rapid.SampledFrom([]time.Duration{time.Second, 5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute, 45 * time.Minute, 2 * time.Hour, 5 * time.Hour}).Draw(t, "advance")
	m.clock.Advance(d)
}

func (m *model) UpstreamFault(t *rapid.T) {
	a := m.accounts[rapid.SampledFrom([]string{"A", "B"}).Draw(t, "fault_account")]
	n := rapid.IntRange(1, 3).Draw(t, "fault_count")
	switch rapid.SampledFrom([]string{"503", "500", "429", "latency", "commit-then-503", "commit-then-hang", "missing-403", "delete-503"}).Draw(t, "fault") {
	case "503":
		a.fake.FailNext(n, http.StatusServiceUnavailable)
	case "500":
		a.fake.FailNext(n, http.StatusInternalServerError)
	case "429":
		a.fake.SetRetryAfter(time.Second)
		a.fake.FailNext(n, http.StatusTooManyRequests)
	case "latency":
		a.fake.SetLatency(1500 * time.Millisecond) // past the 1s request_timeout
	case "commit-then-503":
		a.fake.CommitThenFail(n, http.StatusServiceUnavailable)
	case "commit-then-hang":
		a.fake.SetCommitThenHang(true)
	case "missing-403":
		a.fake.SetMissingStatus(http.StatusForbidden)
	case "delete-503":
		a.fake.FailNextMethod(http.MethodDelete, n, http.StatusServiceUnavailable)
	}
	m.faultSteps = smFaultSteps + 1 // the fault action's own check counts one
}

func (m *model) clearFaults() {
	for _, a := range m.accounts {
		a.fake.FailNext(0, 0)
		a.fake.SetLatency(0)
		a.fake.SetRetryAfter(0)
		a.fake.CommitThenFail(0, 0)
		a.fake.SetCommitThenHang(false)
		a.fake.SetMissingStatus(0)
	}
	m.faultSteps = 0
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
	if o.failed500() {
		m.t.Fatalf("I3: caller mistake answered with a 5xx: %s %v", o, mk.data)
	}
	if o.ok() && (mk.op != logical.ReadOperation || o.resp != nil) {
		m.t.Fatalf("I3: caller mistake accepted: %s %v", o, mk.data)
	}
}

// ---------------------------------------------------------------------------
// Invariants.

// Check runs after every step: Vault's expiry and revoke retries, the end
// of a fault window, rotations the step made, then I1 and I4.
func (m *model) Check(*rapid.T) {
	smSteps.Add(1)
	if m.faultSteps > 0 {
		m.faultSteps--
		if m.faultSteps == 0 {
			m.clearFaults()
		}
	}
	m.expireLeases()
	m.syncStatics()
	m.checkHeldKeysExist()
	m.checkInventory()
	m.checkNoSlotOutlivesItsRequest()
	m.prunePrevious()
}

// checkNoSlotOutlivesItsRequest: the model's requests run one at a time, so
// between steps no issuance holds a max_keys slot; one left over would
// refuse a later issuance that max_keys allows.
func (m *model) checkNoSlotOutlivesItsRequest() {
	m.b.liveCounts.mu.Lock()
	defer m.b.liveCounts.mu.Unlock()
	if len(m.b.liveCounts.slots) != 0 {
		m.t.Fatalf("max_keys slots held after their requests ended: %v", m.b.liveCounts.slots)
	}
}

// held returns the keys the engine must not delete: live leases', static
// roles' current keys and previous keys in their overlap, released keys
// and keys made outside Vault.
func (m *model) held() map[heldKey]string {
	now := m.now()
	held := map[heldKey]string{}
	for _, l := range m.leases {
		held[l.key] = "key of a live lease of role " + l.role
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
	for k, why := range m.held() {
		if _, found := m.accounts[k.account].fake.Key(k.id); !found {
			m.t.Fatalf("I1: %s (%s in account %s) was deleted upstream", k.id, why, k.account)
		}
	}
}

// checkInventory is I4: keys/ lists the leases' keys and static roles'
// current and overlapping keys; a previous key whose overlap ended may
// linger until the scheduler deletes it.
func (m *model) checkInventory() {
	o := m.request(logical.ListOperation, "keys/", nil)
	if o.failed500() || (o.resp != nil && o.resp.IsError()) {
		m.t.Fatalf("I4: listing keys/: %s", o)
	}
	listed := map[string]bool{}
	if o.resp != nil {
		keys, _ := o.resp.Data["keys"].([]string)
		for _, k := range keys {
			listed[k] = true
		}
	}
	now := m.now()
	required := map[string]string{}
	optional := map[string]bool{}
	for _, l := range m.leases {
		required[l.key.id] = "live lease of role " + l.role
	}
	for name, s := range m.statics {
		required[s.current.id] = "current key of static role " + name
		for _, p := range s.previous {
			if now.Before(p.until) {
				required[p.key.id] = "previous key of static role " + name + " in its overlap"
			} else {
				optional[p.key.id] = true
			}
		}
	}
	for k := range m.maybeGone {
		delete(required, k.id)
		optional[k.id] = true
	}
	for id, why := range required {
		if !listed[id] {
			m.t.Fatalf("I4: keys/ lacks %s (%s)", id, why)
		}
	}
	for id := range listed {
		if _, ok := required[id]; !ok && !optional[id] {
			m.t.Fatalf("I4: keys/ lists %s, which the mount does not hold", id)
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
// lease, let every min age pass, tidy once: only static roles' keys and
// released keys may still carry the mount's marker.
func (m *model) checkCleanupLeavesNothing() {
	m.clearFaults()
	for attempt := 0; attempt < 3 && len(m.leases) > 0; attempt++ {
		for _, l := range slices.Clone(m.leases) {
			m.revoke(l)
		}
	}
	if len(m.leases) > 0 {
		m.t.Fatalf("I2: %d leases cannot be revoked with a healthy upstream", len(m.leases))
	}
	m.clock.Advance(time.Hour)
	if o := m.request(logical.UpdateOperation, "tidy", nil); !o.ok() {
		m.t.Fatalf("I2: final tidy: %s", o)
	}
	marker, err := m.b.mountMarker(m.ctx, m.storage)
	if err != nil {
		m.t.Fatalf("mount marker: %v", err)
	}
	allowed := map[heldKey]bool{}
	for k := range m.released {
		allowed[k] = true
	}
	for _, s := range m.statics {
		allowed[s.current] = true
		for _, p := range s.previous {
			allowed[p.key] = true
		}
	}
	for _, acct := range sortedKeys(m.accounts) {
		for _, k := range m.accounts[acct].fake.Keys() {
			if mk, _, ok := parseKeyName(k.Name); ok && mk == marker && !allowed[heldKey{acct, k.ID}] {
				m.t.Fatalf("I2: key %s (%s) in account %s survived revocation of every lease and tidy", k.ID, k.Name, acct)
			}
		}
	}
	m.checkHeldKeysExist()
}

func sortedKeys[V any](in map[string]V) []string {
	keys := make([]string, 0, len(in))
	for k := range in {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
