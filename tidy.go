package carbon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
)

const (
	defaultTidyMinAge = 15 * time.Minute
	// expiredGrace is how long past its max_ttl an inventory entry may
	// outlive its lease before tidy deletes the key: Vault revokes expired
	// leases within seconds and retries failed revocations for a while.
	expiredGrace = time.Hour
)

// tidyOptions are what a caller asks of one tidy run.
type tidyOptions struct {
	configs  []string // the connections to tidy, every one when nil
	minAge   time.Duration
	dryRun   bool
	periodic bool // started by tidy_interval, not by a caller
}

// covers reports whether the run looks after a connection.
func (o tidyOptions) covers(config string) bool {
	return o.configs == nil || slices.Contains(o.configs, config)
}

// The states of a run and of each connection in it, as tidy-status shows
// them. A stored run still "running" that no instance runs was stopped
// midway (a reload, a seal, a leader change): "interrupted".
const (
	tidyRunning     = "running"
	tidyFinished    = "finished"
	tidyInterrupted = "interrupted"

	tidyWaiting        = "waiting"
	tidyRollingBackWAL = "rolling back WAL entries"
	tidyDeleteExpired  = "deleting expired keys"
	tidyScanning       = "scanning projects"

	tidySucceeded = "succeeded"
	tidyFailed    = "failed"    // a step failed: see errors
	tidyCancelled = "cancelled" // the plugin stopped while it ran
)

// tidyReport is what one tidy run found and did, per connection and in
// all. The last one is kept in storage for tidy-status.
type tidyReport struct {
	State    string        `json:"state"`
	Started  time.Time     `json:"started"`
	Finished time.Time     `json:"finished"`
	DryRun   bool          `json:"dry_run"`
	Config   string        `json:"config,omitempty"`
	MinAge   time.Duration `json:"min_age"`
	Periodic bool          `json:"periodic,omitempty"`

	// The run's findings in all: the union of its connections' (merged
	// by aggregate), and the errors of the run's own storage reads.
	Orphans        []string        `json:"orphans"`
	OrphanProjects []string        `json:"orphan_projects"`
	Expired        []string        `json:"expired"`
	StaleRecords   []string        `json:"stale_records"`
	StaleWAL       []staleWALEntry `json:"stale_wal"`
	Deleted        int             `json:"deleted"`
	WALRolledBack  int             `json:"wal_rolled_back"`
	Errors         []string        `json:"errors"`
	runErrors      []string

	Connections map[string]*connectionTidy `json:"connections"`
}

// connectionTidy is one connection's part of a run. Each connection is
// tidied on its own, so a slow or failing upstream delays only its own.
type connectionTidy struct {
	State           string    `json:"state"`
	Outcome         string    `json:"outcome,omitempty"`
	Started         time.Time `json:"started"`
	Finished        time.Time `json:"finished"`
	ProjectsScanned int       `json:"projects_scanned"`
	Projects        int       `json:"projects"`

	Orphans        []string        `json:"orphans"`         // upstream key ids with this mount's marker that nothing tracks
	OrphanProjects []string        `json:"orphan_projects"` // per-lease projects nothing tracks
	Expired        []string        `json:"expired"`         // tracked dynamic keys whose lease must have ended
	StaleRecords   []string        `json:"stale_records"`   // static keys recorded in the inventory that no role holds
	StaleWAL       []staleWALEntry `json:"stale_wal"`       // entries rolled back (or, in a dry run, that would be)
	Deleted        int             `json:"deleted"`
	WALRolledBack  int             `json:"wal_rolled_back"` // stale WAL entries resolved: spent ones dropped, stranded keys deleted
	Errors         []string        `json:"errors"`          // each names its connection and cause
}

// staleWALEntry is a WAL entry old enough to roll back: what it covers.
type staleWALEntry struct {
	ID      string    `json:"id"`
	Kind    string    `json:"kind"`
	Created time.Time `json:"created"`
	Covers  string    `json:"covers"`
}

// tidyStatusStorageKey holds the last tidy's report.
const tidyStatusStorageKey = "tidy/status"

// aggregate merges the connections' findings into the run's.
func (r *tidyReport) aggregate() {
	r.Orphans, r.OrphanProjects, r.Expired, r.StaleRecords, r.StaleWAL = nil, nil, nil, nil, nil
	r.Deleted, r.WALRolledBack = 0, 0
	r.Errors = slices.Clone(r.runErrors)
	for _, name := range slices.Sorted(maps.Keys(r.Connections)) {
		c := r.Connections[name]
		r.Orphans = append(r.Orphans, c.Orphans...)
		r.OrphanProjects = append(r.OrphanProjects, c.OrphanProjects...)
		r.Expired = append(r.Expired, c.Expired...)
		r.StaleRecords = append(r.StaleRecords, c.StaleRecords...)
		r.StaleWAL = append(r.StaleWAL, c.StaleWAL...)
		r.Deleted += c.Deleted
		r.WALRolledBack += c.WALRolledBack
		r.Errors = append(r.Errors, c.Errors...)
	}
}

// data is the report as tidy and tidy-status answer it.
func (r *tidyReport) data() map[string]any {
	connections := map[string]any{}
	for name, c := range r.Connections {
		connections[name] = map[string]any{
			"state": c.State, "outcome": c.Outcome,
			"started": formatTime(c.Started), "finished": formatTime(c.Finished),
			"projects_scanned": c.ProjectsScanned, "projects": c.Projects,
			"orphans": nonNil(c.Orphans), "orphan_projects": nonNil(c.OrphanProjects),
			"expired": nonNil(c.Expired), "stale_records": nonNil(c.StaleRecords),
			"stale_wal": staleWALData(c.StaleWAL), "deleted": c.Deleted,
			"wal_rolled_back": c.WALRolledBack, "errors": nonNil(c.Errors),
		}
	}
	return map[string]any{
		"state":           r.State,
		"started":         formatTime(r.Started),
		"finished":        formatTime(r.Finished),
		"dry_run":         r.DryRun,
		"config":          r.Config,
		"min_age":         int64(r.MinAge.Seconds()),
		"periodic":        r.Periodic,
		"orphans":         nonNil(r.Orphans),
		"orphan_projects": nonNil(r.OrphanProjects),
		"expired":         nonNil(r.Expired),
		"stale_records":   nonNil(r.StaleRecords),
		"stale_wal":       staleWALData(r.StaleWAL),
		"deleted":         r.Deleted,
		"wal_rolled_back": r.WALRolledBack,
		"errors":          nonNil(r.Errors),
		"connections":     connections,
	}
}

func staleWALData(entries []staleWALEntry) []map[string]any {
	out := make([]map[string]any, 0, len(entries))
	for _, e := range entries {
		out = append(out, map[string]any{"id": e.ID, "kind": e.Kind, "created": formatTime(e.Created), "covers": e.Covers})
	}
	return out
}

// tidyRun is the state of one tidy: what the mount tracks, and what the run
// found and did. What the mount tracks is read once, before the
// connections are tidied, and only read after; each connection's part of
// the report is written by its own goroutine, under mu, which tidy-status
// takes to read it.
type tidyRun struct {
	b       *backend
	storage logical.Storage
	tidyOptions
	now    time.Time
	cutoff time.Time // keys and WAL entries created after it are left alone
	marker string
	// copiesOfOthers: on a performance secondary, records of another
	// marker are copies of the primary's, spared but never acted on.
	copiesOfOthers bool

	inFlight        map[string]bool                  // key names of WAL entries too young to roll back
	inFlightBlocks  []*issuanceBlock                 // blocks of names too young to roll back
	staleWAL        map[string][]*framework.WALEntry // config -> its stale WAL entries, with their ids
	staleWALIDs     map[*framework.WALEntry]string
	tracked         map[string]bool            // key ids the mount owns
	trackedProjects map[string]bool            // per-lease projects the mount owns
	projects        map[string]map[string]bool // config -> projects to scan
	expired         []*ownedKey
	staticRecords   []*ownedKey     // static keys as the inventory records them; the roles say who holds them
	roleKeys        map[string]bool // key ids static roles hold

	mu     sync.Mutex
	report tidyReport

	done  chan struct{} // closed when the run has ended and its report is stored
	final *tidyReport   // the report, once done is closed
}

func (b *backend) newTidyRun(s logical.Storage, opts tidyOptions) *tidyRun {
	now := b.now()
	return &tidyRun{
		b: b, storage: s, tidyOptions: opts,
		now: now, cutoff: now.Add(-opts.minAge),
		inFlight:        map[string]bool{},
		staleWAL:        map[string][]*framework.WALEntry{},
		staleWALIDs:     map[*framework.WALEntry]string{},
		tracked:         map[string]bool{},
		trackedProjects: map[string]bool{},
		roleKeys:        map[string]bool{},
		projects:        map[string]map[string]bool{},
		done:            make(chan struct{}),
		report: tidyReport{
			State: tidyRunning, Started: now.UTC(), DryRun: opts.dryRun, Config: strings.Join(opts.configs, ","),
			MinAge: opts.minAge, Periodic: opts.periodic, Connections: map[string]*connectionTidy{},
		},
	}
}

// tidyParallelConnections bounds how many connections one run tidies at
// once.
const tidyParallelConnections = 4

// run tidies: it reads what the mount tracks and which WAL entries are
// stale, then, for each connection on its own, rolls back the stale WAL
// entries, deletes tracked keys whose lease must have ended, and deletes
// upstream keys (and per-lease projects) that carry this mount's marker
// but that nothing tracks. Keys without the marker are never touched.
func (run *tidyRun) run(ctx context.Context) *tidyReport {
	if err := run.collect(ctx); err != nil {
		run.mu.Lock()
		run.report.runErrors = append(run.report.runErrors, fmt.Sprintf("reading the mount's records: %s; nothing was tidied", err))
		run.mu.Unlock()
	} else {
		run.forgetStaleStaticRecords(ctx)
		var wg sync.WaitGroup
		slots := make(chan struct{}, tidyParallelConnections)
		for _, config := range run.configs() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				slots <- struct{}{}
				defer func() { <-slots }()
				run.tidyConnection(ctx, config)
			}()
		}
		wg.Wait()
	}

	run.mu.Lock()
	defer run.mu.Unlock()
	r := &run.report
	r.State, r.Finished = tidyFinished, run.b.now().UTC()
	if ctx.Err() != nil {
		r.State = tidyInterrupted // Clean stopped it
	}
	r.aggregate()
	report := *r
	return &report
}

// collect reads what the run needs to know before it tidies anything.
func (run *tidyRun) collect(ctx context.Context) error {
	marker, err := run.b.mountMarker(ctx, run.storage)
	if err != nil {
		return err
	}
	run.marker, run.copiesOfOthers = marker, run.b.onPerformanceSecondary()
	if err := run.collectWAL(ctx); err != nil {
		return err
	}
	if err := run.collectInventory(ctx); err != nil {
		return err
	}
	if err := run.collectRoles(ctx); err != nil {
		return err
	}
	for _, config := range run.configs() {
		run.connection(config) // listed from the start, waiting their turn
	}
	return nil
}

// connection is a connection's part of the report; the caller holds mu,
// or the connections are not yet being tidied.
func (run *tidyRun) connection(config string) *connectionTidy {
	c := run.report.Connections[config]
	if c == nil {
		c = &connectionTidy{State: tidyWaiting}
		run.report.Connections[config] = c
	}
	return c
}

// update changes a connection's part of the report under mu.
func (run *tidyRun) update(config string, change func(*connectionTidy)) {
	run.mu.Lock()
	defer run.mu.Unlock()
	change(run.connection(config))
}

func (run *tidyRun) fail(config string, err error) {
	run.update(config, func(c *connectionTidy) {
		c.Errors = append(c.Errors, fmt.Sprintf("config %q: %s", config, err))
	})
}

// snapshot is the report as it stands, for tidy-status while the run goes
// on.
func (run *tidyRun) snapshot() *tidyReport {
	run.mu.Lock()
	defer run.mu.Unlock()
	r := run.report
	r.Connections = make(map[string]*connectionTidy, len(run.report.Connections))
	for name, c := range run.report.Connections {
		copied := *c
		r.Connections[name] = &copied
	}
	r.aggregate()
	return &r
}

// tidyConnection is one connection's part of the run.
func (run *tidyRun) tidyConnection(ctx context.Context, config string) {
	run.update(config, func(c *connectionTidy) { c.Started = run.b.now().UTC() })
	run.rollBackStaleWAL(ctx, config)
	run.deleteExpired(ctx, config)
	client, err := run.b.climatiqClient(ctx, run.storage, config)
	var ce *connectionError
	switch {
	case errors.As(err, &ce) && ce.notClimatiq:
		// An Altruistiq connection: it has no keys to tidy.
	case err != nil:
		run.fail(config, fmt.Errorf("%w; the keys recorded through it cannot be checked until it is recreated", err))
	default:
		run.scanConnection(ctx, client, config)
	}
	run.update(config, func(c *connectionTidy) {
		c.State, c.Finished, c.Outcome = tidyFinished, run.b.now().UTC(), tidySucceeded
		switch {
		case ctx.Err() != nil:
			c.Outcome = tidyCancelled
		case len(c.Errors) > 0:
			c.Outcome = tidyFailed
		}
	})
}

// scanProject adds a project of a connection to the projects to scan.
func (run *tidyRun) scanProject(config, project string) {
	if run.projects[config] == nil {
		run.projects[config] = map[string]bool{}
	}
	if project != "" {
		run.projects[config][project] = true
	}
}

// configs are the connections to tidy, in a stable order: those the
// records and the stale WAL entries name, or the one asked for.
func (run *tidyRun) configs() []string {
	set := map[string]bool{}
	for config := range run.projects {
		set[config] = true
	}
	for config := range run.staleWAL {
		set[config] = true
	}
	for _, config := range run.tidyOptions.configs {
		set[config] = true
	}
	var configs []string
	for config := range set {
		if run.covers(config) {
			configs = append(configs, config)
		}
	}
	sort.Strings(configs)
	return configs
}

// collectWAL sorts the WAL entries: stale ones, to roll back now instead
// of waiting for the rollback manager, and those of issuances that may
// still be in flight, whose keys the orphan scan spares whatever min_age.
// An entry is stale once it is older than both min_age and
// walRollbackMinAge (the longest an issuance can take), or when it was
// written before this plugin instance started and nothing in this process
// still holds it (blockRollbackDue). Every connection's entries are
// sorted, the run's or not: one upstream account may serve two
// connections.
func (run *tidyRun) collectWAL(ctx context.Context) error {
	ids, err := framework.ListWAL(ctx, run.storage)
	if err != nil {
		return err
	}
	// WAL entries carry Vault's real time, not the engine's clock.
	walCutoff := time.Now().Add(-max(run.minAge, walRollbackMinAge))
	for _, id := range ids {
		entry, err := framework.GetWAL(ctx, run.storage, id)
		if err != nil {
			return err
		}
		if entry == nil {
			continue
		}
		created := time.Unix(entry.CreatedAt, 0)
		var blk issuanceBlock
		var key ownedKey
		isBlock := entry.Kind == walKindIssuanceBlock && decodeInto(entry.Data, &blk) == nil
		isKey := !isBlock && decodeInto(entry.Data, &key) == nil
		switch {
		case isBlock && !run.b.blockRollbackDue(&blk, created, walCutoff):
			run.inFlightBlocks = append(run.inFlightBlocks, &blk)
			continue
		case !isBlock && !created.Before(walCutoff) && !created.Before(run.b.startedAt):
			if isKey {
				run.inFlight[key.KeyName] = true
			}
			continue
		}
		config := key.Config
		if isBlock {
			config = blk.Config
		}
		run.staleWAL[config] = append(run.staleWAL[config], entry)
		run.staleWALIDs[entry] = id
	}
	return nil
}

// describeWAL says what a stale WAL entry covers.
func describeWAL(id string, entry *framework.WALEntry) staleWALEntry {
	e := staleWALEntry{ID: id, Kind: entry.Kind, Created: time.Unix(entry.CreatedAt, 0).UTC()}
	var blk issuanceBlock
	var key ownedKey
	switch {
	case entry.Kind == walKindIssuanceBlock && decodeInto(entry.Data, &blk) == nil:
		e.Covers = fmt.Sprintf("key names with nonce prefix %q made from %s to %s", blk.NoncePrefix,
			blk.From.UTC().Format(time.RFC3339), blk.Until.UTC().Format(time.RFC3339))
	case decodeInto(entry.Data, &key) == nil:
		e.Covers = fmt.Sprintf("key name %q", key.KeyName)
	}
	return e
}

// rollBackStaleWAL rolls back a connection's stale WAL entries; a dry run
// only lists them.
func (run *tidyRun) rollBackStaleWAL(ctx context.Context, config string) {
	run.update(config, func(c *connectionTidy) { c.State = tidyRollingBackWAL })
	for _, entry := range run.staleWAL[config] {
		id := run.staleWALIDs[entry]
		if !run.dryRun {
			if err := run.b.walRollback(ctx, &logical.Request{Storage: run.storage}, entry.Kind, entry.Data); err != nil {
				run.fail(config, fmt.Errorf("WAL entry %s: %w", id, err))
				continue
			}
			if err := framework.DeleteWAL(ctx, run.storage, id); err != nil {
				run.fail(config, fmt.Errorf("WAL entry %s was rolled back, but deleting it failed: %w", id, err))
				continue
			}
		}
		run.update(config, func(c *connectionTidy) {
			c.StaleWAL = append(c.StaleWAL, describeWAL(id, entry))
			if !run.dryRun {
				c.WALRolledBack++
			}
		})
	}
}

// collectInventory records the keys the inventory tracks, and those whose
// lease must have ended.
func (run *tidyRun) collectInventory(ctx context.Context) error {
	return walkKeys(ctx, run.storage, func(k *ownedKey) error {
		if k.kind() == keyKindStatic {
			// The role is what holds a static key; its inventory record
			// follows it (collectRoles, forgetStaleStaticRecords).
			run.staticRecords = append(run.staticRecords, k)
			run.scanProject(k.Config, k.ProjectID)
			return nil
		}
		run.tracked[k.KeyID] = true
		if k.ProjectPerLease {
			run.trackedProjects[k.ProjectID] = true
		}
		run.scanProject(k.Config, k.ProjectID)
		if run.copiesOfOthers {
			if m, _, _ := parseKeyName(k.KeyName); m != run.marker {
				return nil // the primary's key: its lease is the primary's
			}
		}
		if k.kind() == keyKindDynamic && !k.Expires.IsZero() && run.now.After(k.Expires.Add(expiredGrace)) {
			run.expired = append(run.expired, k)
		}
		return nil
	})
}

// collectRoles adds the projects of dynamic and static roles to the
// projects to scan, and static roles' keys and released keys to the keys
// tidy must never delete.
func (run *tidyRun) collectRoles(ctx context.Context) error {
	names, err := run.storage.List(ctx, roleStoragePrefix)
	if err != nil {
		return err
	}
	for _, name := range names {
		role, err := getRole(ctx, run.storage, name)
		if err != nil {
			return err
		}
		if role != nil && (role.ProjectID != "" || role.ProjectPerLease) {
			run.scanProject(role.Config, role.ProjectID) // Altruistiq roles have no keys
		}
	}
	released, err := releasedKeyIDs(ctx, run.storage)
	if err != nil {
		return err
	}
	for _, id := range released {
		run.tracked[id] = true
	}
	names, err = run.storage.List(ctx, staticRoleStoragePrefix)
	if err != nil {
		return err
	}
	for _, name := range names {
		role, err := getStaticRole(ctx, run.storage, name)
		if err != nil {
			return err
		}
		if role != nil {
			run.scanProject(role.Config, role.ProjectID)
			for _, k := range role.ownedKeys(name) {
				run.tracked[k.KeyID] = true
				run.roleKeys[k.KeyID] = true
			}
		}
	}
	return nil
}

// forgetStaleStaticRecords forgets the inventory records of static keys
// that their role does not hold: a rotation or an adoption records the key
// before it writes the role, so a stop or a failed write between the two
// leaves such a record. The key itself is then judged like any other: kept
// when a release record holds it, an orphan when it is this mount's and
// nothing does. Each record is checked again under its role's lock, which
// a rotation or adoption in flight holds until its role is written.
func (run *tidyRun) forgetStaleStaticRecords(ctx context.Context) {
	for _, k := range run.staticRecords {
		if run.roleKeys[k.KeyID] {
			continue
		}
		if !run.covers(k.Config) {
			run.tracked[k.KeyID] = true // another connection's: not this run's to judge
			continue
		}
		held, err := run.b.forgetStaticRecordUnlessHeld(ctx, run.storage, k, run.dryRun)
		switch {
		case err != nil:
			run.tracked[k.KeyID] = true
			run.fail(k.Config, fmt.Errorf("checking the record of static key %s: %w", k.KeyID, err))
		case held:
			run.tracked[k.KeyID] = true
		default:
			run.update(k.Config, func(c *connectionTidy) { c.StaleRecords = append(c.StaleRecords, k.KeyID) })
		}
	}
}

// forgetStaleStaticRecords' check of one key: each role that an entry of
// the key names is read again under its lock (one role at a time), and
// the entries of a role that does not hold the key are forgotten; another
// role's entries stay (a key adopted by a new role after a failed
// adoption elsewhere). It reports whether some role, or a release record,
// holds the key.
func (b *backend) forgetStaticRecordUnlessHeld(ctx context.Context, s logical.Storage, k *ownedKey, dryRun bool) (bool, error) {
	entries, _, err := keyEntries(ctx, s, k.KeyID)
	if err != nil {
		return false, err
	}
	roles := map[string]bool{}
	for _, e := range entries {
		if e.kind() == keyKindStatic {
			roles[e.Role] = true
		}
	}
	held := false
	for _, name := range slices.Sorted(maps.Keys(roles)) {
		holds, err := b.forgetRecordsUnlessRoleHolds(ctx, s, k.KeyID, name, dryRun)
		if err != nil {
			return false, err
		}
		held = held || holds
	}
	if held {
		return true, nil
	}
	// A role delete writes the release record before it removes the role,
	// so a role found not holding the key, and read before this, leaves
	// the key's release (if any) for this read to see; the scan of
	// release records at the start of the run may have come too early.
	released, err := s.Get(ctx, releasedPath(k.KeyID))
	return released != nil, err
}

func (b *backend) forgetRecordsUnlessRoleHolds(ctx context.Context, s logical.Storage, id, name string, dryRun bool) (bool, error) {
	lock := b.staticRoleLock(name)
	lock.Lock()
	defer lock.Unlock()
	role, err := getStaticRole(ctx, s, name)
	if err != nil || role.holds(id) {
		return err == nil, err
	}
	if dryRun {
		return false, nil
	}
	return false, b.forgetRoleRecords(ctx, s, id, name)
}

// deleteExpired deletes a connection's keys whose lease must have ended
// without Vault revoking it (Vault died between the plugin's answer and
// storing the lease).
func (run *tidyRun) deleteExpired(ctx context.Context, config string) {
	run.update(config, func(c *connectionTidy) { c.State = tidyDeleteExpired })
	for _, k := range run.expired {
		if k.Config != config {
			continue
		}
		run.update(config, func(c *connectionTidy) { c.Expired = append(c.Expired, k.KeyID) })
		if run.dryRun {
			continue
		}
		client, err := run.b.climatiqClient(ctx, run.storage, k.Config)
		if err == nil {
			err = run.b.deleteExpiredKey(ctx, run.storage, client, k)
		}
		if err != nil {
			run.fail(config, fmt.Errorf("deleting expired key %s: %w", k.KeyID, err))
			continue
		}
		run.update(config, func(c *connectionTidy) { c.Deleted++ })
	}
}

// deleteExpiredKey deletes a key whose recorded expiry passed long ago,
// under the lock a renewal holds while it moves that expiry: a renewal
// that got there first has moved it, and the key is kept.
func (b *backend) deleteExpiredKey(ctx context.Context, s logical.Storage, client *climatiq.Client, listed *ownedKey) error {
	lock := b.keyLock(listed.KeyName)
	lock.Lock()
	defer lock.Unlock()
	k, err := getKey(ctx, s, listed.KeyID)
	if err != nil || k == nil || !k.Expires.Equal(listed.Expires) {
		return err // revoked or renewed meanwhile
	}
	if err := deleteUpstream(ctx, client, k); err != nil {
		return err
	}
	return b.forgetKey(ctx, s, k)
}

// ours reports whether an upstream name is this mount's, old enough, and
// not covered by an issuance in flight. Names carry whole seconds: a name
// of second S was made at some moment of [S, S+1s), so it is old enough
// only when all of that second is.
func (run *tidyRun) ours(name string) bool {
	m, created, ok := parseKeyName(name)
	if !ok || m != run.marker || created.Add(time.Second).After(run.cutoff) || run.inFlight[name] {
		return false
	}
	for _, blk := range run.inFlightBlocks {
		if blk.covers(name) {
			return false
		}
	}
	return true
}

// scanConnection scans one connection's projects for marked keys that
// nothing tracks, and for marked per-lease projects that nothing tracks.
func (run *tidyRun) scanConnection(ctx context.Context, client *climatiq.Client, config string) {
	run.update(config, func(c *connectionTidy) { c.State = tidyScanning })
	all, err := client.ListProjects(ctx)
	if err != nil {
		run.fail(config, err)
		return
	}
	scan := map[string]bool{}
	for id := range run.projects[config] {
		scan[id] = true
	}
	for _, p := range all {
		if !run.ours(p.Name) {
			continue
		}
		if run.trackedProjects[p.ID] {
			scan[p.ID] = true
			continue
		}
		// An orphan project's keys go with it; they are not listed apart.
		run.update(config, func(c *connectionTidy) { c.OrphanProjects = append(c.OrphanProjects, p.ID) })
		delete(scan, p.ID)
		if !run.dryRun {
			if err := ignoreNotFound(client.DeleteProject(ctx, p.ID)); err != nil {
				run.fail(config, err)
			} else {
				run.update(config, func(c *connectionTidy) { c.Deleted++ })
			}
		}
	}
	ids := slices.Sorted(maps.Keys(scan))
	run.update(config, func(c *connectionTidy) { c.Projects = len(ids) })
	for _, projectID := range ids {
		run.scanProjectKeys(ctx, client, config, projectID)
		run.update(config, func(c *connectionTidy) { c.ProjectsScanned++ })
	}
}

// scanProjectKeys deletes a project's marked keys that nothing tracks.
func (run *tidyRun) scanProjectKeys(ctx context.Context, client *climatiq.Client, config, projectID string) {
	keys, err := client.ListKeys(ctx, projectID)
	if errors.Is(err, climatiq.ErrNotFound) {
		return
	}
	if err != nil {
		run.fail(config, err)
		return
	}
	for _, k := range keys {
		if run.tracked[k.ID] || !run.ours(k.Name) {
			continue
		}
		run.update(config, func(c *connectionTidy) { c.Orphans = append(c.Orphans, k.ID) })
		if run.dryRun {
			continue
		}
		if err := ignoreNotFound(client.DeleteProjectKey(ctx, projectID, k.ID)); err != nil {
			run.fail(config, err)
			continue
		}
		run.update(config, func(c *connectionTidy) { c.Deleted++ })
	}
}

// periodicTidy starts, from the rollback manager's periodic call (about
// once a minute) and on the node that may write this cluster's local
// storage (each cluster tidies its own keys), a background tidy of the
// connections whose tidy_interval has passed. While a tidy runs, none
// starts: the due connections are tidied a minute later.
func (b *backend) periodicTidy(ctx context.Context, req *logical.Request) error {
	if !b.mayWriteLocalStorage() {
		return nil
	}
	b.closeSpentBlocks(ctx)
	names, err := req.Storage.List(ctx, configStoragePrefix)
	if err != nil {
		return err
	}
	now := b.now()
	var due []string
	for _, name := range names {
		cfg, err := getConnectionConfig(ctx, req.Storage, name)
		if err != nil || cfg == nil || cfg.TidyInterval == 0 {
			continue
		}
		b.lastTidyLock.Lock()
		if now.Sub(b.lastTidy[name]) >= cfg.TidyInterval {
			due = append(due, name)
		}
		b.lastTidyLock.Unlock()
	}
	if len(due) == 0 {
		return nil
	}
	if _, running := b.startTidy(req.Storage, tidyOptions{configs: due, minAge: defaultTidyMinAge, periodic: true}); running != nil {
		return nil
	}
	b.lastTidyLock.Lock()
	for _, name := range due {
		b.lastTidy[name] = now
	}
	b.lastTidyLock.Unlock()
	return nil
}
