package carbon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
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
	only   string // one connection, or "" for all
	minAge time.Duration
	dryRun bool
}

// tidyReport is what one tidy run found and did. The last one is kept in
// storage for tidy-status.
type tidyReport struct {
	Started  time.Time     `json:"started"`
	Finished time.Time     `json:"finished"`
	DryRun   bool          `json:"dry_run"`
	Config   string        `json:"config,omitempty"`
	MinAge   time.Duration `json:"min_age"`

	Orphans        []string `json:"orphans"`         // upstream key ids with this mount's marker that nothing tracks
	OrphanProjects []string `json:"orphan_projects"` // per-lease projects nothing tracks
	Expired        []string `json:"expired"`         // tracked dynamic keys whose lease must have ended
	StaleRecords   []string `json:"stale_records"`   // static keys recorded in the inventory that no role holds
	Deleted        int      `json:"deleted"`
	WALRolledBack  int      `json:"wal_rolled_back"` // stale WAL entries resolved: spent ones dropped, stranded keys deleted
	Errors         []string `json:"errors"`          // each names its connection and cause
}

// tidyStatusStorageKey holds the last tidy's report.
const tidyStatusStorageKey = "tidy/status"

func (r *tidyReport) data() map[string]any {
	return map[string]any{
		"dry_run":         r.DryRun,
		"orphans":         nonNil(r.Orphans),
		"orphan_projects": nonNil(r.OrphanProjects),
		"expired":         nonNil(r.Expired),
		"stale_records":   nonNil(r.StaleRecords),
		"deleted":         r.Deleted,
		"wal_rolled_back": r.WALRolledBack,
		"errors":          nonNil(r.Errors),
	}
}

// tidyRun is the state of one tidy: what the mount tracks, and what the run
// found and did.
type tidyRun struct {
	b       *backend
	storage logical.Storage
	tidyOptions
	now    time.Time
	cutoff time.Time // keys and WAL entries created after it are left alone
	marker string

	inFlight        map[string]bool            // key names of WAL entries too young to roll back
	inFlightBlocks  []*issuanceBlock           // blocks of names too young to roll back
	tracked         map[string]bool            // key ids the mount owns
	trackedProjects map[string]bool            // per-lease projects the mount owns
	projects        map[string]map[string]bool // config -> projects to scan
	expired         []*ownedKey
	staticRecords   []*ownedKey     // static keys as the inventory records them; the roles say who holds them
	roleKeys        map[string]bool // key ids static roles hold
	report          tidyReport
}

// tidy rolls back stale WAL entries, deletes tracked keys whose lease must
// have ended, and deletes upstream keys (and per-lease projects) that carry
// this mount's marker but that nothing tracks. Keys without the marker are
// never touched.
func (b *backend) tidy(ctx context.Context, s logical.Storage, opts tidyOptions) (*tidyReport, error) {
	now := b.now()
	run := &tidyRun{
		b: b, storage: s, tidyOptions: opts,
		now: now, cutoff: now.Add(-opts.minAge),
		inFlight:        map[string]bool{},
		tracked:         map[string]bool{},
		trackedProjects: map[string]bool{},
		roleKeys:        map[string]bool{},
		projects:        map[string]map[string]bool{},
	}
	if err := run.rollBackStaleWAL(ctx); err != nil {
		return nil, err
	}
	if err := run.collectInventory(ctx); err != nil {
		return nil, err
	}
	if err := run.collectRoles(ctx); err != nil {
		return nil, err
	}
	run.forgetStaleStaticRecords(ctx)
	run.deleteExpired(ctx)

	marker, err := b.mountMarker(ctx, s)
	if err != nil {
		return nil, err
	}
	run.marker = marker
	for _, config := range run.configs() {
		client, err := b.climatiqClient(ctx, s, config)
		var ce *connectionError
		switch {
		case errors.As(err, &ce) && !ce.missing:
			continue // an Altruistiq connection: it has no keys to tidy
		case err != nil:
			run.fail(fmt.Errorf("config %q: %w; the keys recorded through it cannot be checked until it is recreated", config, err))
			continue
		}
		run.scanConnection(ctx, client, config)
	}

	r := &run.report
	r.Finished = b.now().UTC()
	r.Started, r.DryRun, r.Config, r.MinAge = now.UTC(), opts.dryRun, opts.only, opts.minAge
	if err := putEntry(ctx, s, tidyStatusStorageKey, r); err != nil {
		b.Logger().Warn("storing the tidy report failed", "error", err)
	}
	b.logAndEmit(eventTidy, "dry_run", strconv.FormatBool(opts.dryRun),
		"orphans", strconv.Itoa(len(r.Orphans)), "orphan_projects", strconv.Itoa(len(r.OrphanProjects)),
		"expired", strconv.Itoa(len(r.Expired)), "deleted", strconv.Itoa(r.Deleted),
		"wal_rolled_back", strconv.Itoa(r.WALRolledBack), "errors", strconv.Itoa(len(r.Errors)))
	return r, nil
}

func (run *tidyRun) fail(err error) {
	run.report.Errors = append(run.report.Errors, err.Error())
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

// configs are the connections to scan, in a stable order.
func (run *tidyRun) configs() []string {
	var configs []string
	for config := range run.projects {
		if run.only == "" || config == run.only {
			configs = append(configs, config)
		}
	}
	if run.only != "" && run.projects[run.only] == nil {
		configs = append(configs, run.only)
	}
	sort.Strings(configs)
	return configs
}

// rollBackStaleWAL rolls back stale WAL entries now, instead of waiting
// for the rollback manager. An entry is stale once it is older than both
// min_age and walRollbackMinAge (the longest an issuance can take), or when
// it was written before this plugin instance started and nothing in this
// process still holds it (blockRollbackDue). Younger entries cover
// issuances in flight: their keys are spared by the orphan scan too,
// whatever min_age.
func (run *tidyRun) rollBackStaleWAL(ctx context.Context) error {
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
		isBlock := entry.Kind == walKindIssuanceBlock && decodeInto(entry.Data, &blk) == nil
		switch {
		case isBlock && !run.b.blockRollbackDue(&blk, created, walCutoff):
			run.inFlightBlocks = append(run.inFlightBlocks, &blk)
			continue
		case !isBlock && !created.Before(walCutoff) && !created.Before(run.b.startedAt):
			var key ownedKey
			if decodeInto(entry.Data, &key) == nil {
				run.inFlight[key.KeyName] = true
			}
			continue
		}
		if run.dryRun {
			continue
		}
		if err := run.b.walRollback(ctx, &logical.Request{Storage: run.storage}, entry.Kind, entry.Data); err != nil {
			run.fail(fmt.Errorf("WAL entry %s: %w", id, err))
			continue
		}
		if err := framework.DeleteWAL(ctx, run.storage, id); err != nil {
			return err
		}
		run.report.WALRolledBack++
	}
	return nil
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
		if run.only != "" && k.Config != run.only {
			run.tracked[k.KeyID] = true // another connection's: not this run's to judge
			continue
		}
		held, err := run.b.forgetStaticRecordUnlessHeld(ctx, run.storage, k, run.dryRun)
		switch {
		case err != nil:
			run.tracked[k.KeyID] = true
			run.fail(fmt.Errorf("config %q: checking the record of static key %s: %w", k.Config, k.KeyID, err))
		case held:
			run.tracked[k.KeyID] = true
		default:
			run.report.StaleRecords = append(run.report.StaleRecords, k.KeyID)
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

// deleteExpired deletes keys whose lease must have ended without Vault
// revoking it (Vault died between the plugin's answer and storing the lease).
func (run *tidyRun) deleteExpired(ctx context.Context) {
	for _, k := range run.expired {
		if run.only != "" && k.Config != run.only {
			continue
		}
		run.report.Expired = append(run.report.Expired, k.KeyID)
		if run.dryRun {
			continue
		}
		client, err := run.b.climatiqClient(ctx, run.storage, k.Config)
		if err == nil {
			err = run.b.deleteExpiredKey(ctx, run.storage, client, k)
		}
		if err != nil {
			run.fail(fmt.Errorf("config %q: deleting expired key %s: %w", k.Config, k.KeyID, err))
			continue
		}
		run.report.Deleted++
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
	fail := func(err error) { run.fail(fmt.Errorf("config %q: %w", config, err)) }
	all, err := client.ListProjects(ctx)
	if err != nil {
		fail(err)
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
		run.report.OrphanProjects = append(run.report.OrphanProjects, p.ID)
		delete(scan, p.ID)
		if !run.dryRun {
			if err := ignoreNotFound(client.DeleteProject(ctx, p.ID)); err != nil {
				fail(err)
			} else {
				run.report.Deleted++
			}
		}
	}
	ids := make([]string, 0, len(scan))
	for id := range scan {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, projectID := range ids {
		keys, err := client.ListKeys(ctx, projectID)
		if errors.Is(err, climatiq.ErrNotFound) {
			continue
		}
		if err != nil {
			fail(err)
			continue
		}
		for _, k := range keys {
			if run.tracked[k.ID] || !run.ours(k.Name) {
				continue
			}
			run.report.Orphans = append(run.report.Orphans, k.ID)
			if run.dryRun {
				continue
			}
			if err := ignoreNotFound(client.DeleteProjectKey(ctx, projectID, k.ID)); err != nil {
				fail(err)
				continue
			}
			run.report.Deleted++
		}
	}
}

// periodicTidy runs tidy for connections with a tidy_interval, from the
// rollback manager's periodic call (about once a minute), on the node that
// may write.
func (b *backend) periodicTidy(ctx context.Context, req *logical.Request) error {
	if !b.WriteSafeReplicationState() {
		return nil
	}
	b.closeSpentBlocks(ctx)
	names, err := req.Storage.List(ctx, configStoragePrefix)
	if err != nil {
		return err
	}
	now := b.now()
	for _, name := range names {
		cfg, err := getConnectionConfig(ctx, req.Storage, name)
		if err != nil || cfg == nil || cfg.TidyInterval == 0 {
			continue
		}
		b.tidyLock.Lock()
		due := now.Sub(b.lastTidy[name]) >= cfg.TidyInterval
		if due {
			b.lastTidy[name] = now
		}
		b.tidyLock.Unlock()
		if !due {
			continue
		}
		report, err := b.tidy(ctx, req.Storage, tidyOptions{only: name, minAge: defaultTidyMinAge})
		if err != nil {
			b.Logger().Warn("periodic tidy failed", "config", name, "error", err)
			continue
		}
		for _, e := range report.Errors {
			b.Logger().Warn("periodic tidy could not finish a step", "config", name, "error", e)
		}
	}
	return nil
}
