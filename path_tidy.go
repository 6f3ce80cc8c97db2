package carbon

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
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

func pathTidy(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "tidy$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefixCarbon,
				OperationVerb:   "tidy",
			},
			Fields: map[string]*framework.FieldSchema{
				"dry_run": {
					Type:        framework.TypeBool,
					Description: "Report what would be deleted without deleting anything.",
				},
				"config": {
					Type:        framework.TypeString,
					Description: "Tidy only this Climatiq connection. Default: all of them.",
				},
				"min_age": {
					Type:        framework.TypeDurationSecond,
					Default:     int(defaultTidyMinAge.Seconds()),
					Description: "Leave keys and WAL entries younger than this alone, so issuance in flight is never raced. Default 15m.",
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                  b.pathTidyWrite,
					ForwardPerformanceStandby: true,
					Summary:                   "Find and delete upstream keys this mount created but no longer tracks.",
				},
			},
			HelpSynopsis:    "Find and delete upstream keys this mount created but no longer tracks.",
			HelpDescription: strings.TrimSpace(pathTidyHelp),
		},
	}
}

// tidyReport is what one tidy run found and did.
type tidyReport struct {
	Orphans        []string // upstream key ids with this mount's marker that nothing tracks
	OrphanProjects []string // per-lease projects nothing tracks
	Expired        []string // tracked dynamic keys whose lease must have ended
	Deleted        int
	WALRolledBack  int // stale WAL entries resolved: spent ones dropped, stranded keys deleted
	Errors         []string
}

func (r *tidyReport) data(dryRun bool) map[string]any {
	return map[string]any{
		"dry_run":         dryRun,
		"orphans":         nonNil(r.Orphans),
		"orphan_projects": nonNil(r.OrphanProjects),
		"expired":         nonNil(r.Expired),
		"deleted":         r.Deleted,
		"wal_rolled_back": r.WALRolledBack,
		"errors":          nonNil(r.Errors),
	}
}

func (b *backend) pathTidyWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	dryRun := d.Get("dry_run").(bool)
	minAge := time.Duration(d.Get("min_age").(int)) * time.Second
	if minAge < 0 {
		return logical.ErrorResponse("min_age: must not be negative"), nil
	}
	only := strings.TrimSpace(d.Get("config").(string))
	if only != "" {
		if err := validateName("config", only); err != nil {
			return errorResponse(err)
		}
		cfg, err := getConnectionConfig(ctx, req.Storage, only)
		if err != nil {
			return nil, err
		}
		if cfg == nil || cfg.Provider != providerClimatiq {
			return logical.ErrorResponse("config: %q is not a climatiq connection; tidy looks after Climatiq keys", only), nil
		}
	}
	report, err := b.tidy(ctx, req.Storage, only, minAge, dryRun)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: report.data(dryRun)}, nil
}

// tidy rolls back stale WAL entries, deletes tracked keys whose lease must
// have ended, and deletes upstream keys (and per-lease projects) that carry
// this mount's marker but that nothing tracks. Keys without the marker are
// never touched.
func (b *backend) tidy(ctx context.Context, s logical.Storage, only string, minAge time.Duration, dryRun bool) (*tidyReport, error) {
	report := &tidyReport{}
	now := time.Now()
	cutoff := now.Add(-minAge)

	if err := b.tidyWAL(ctx, s, cutoff, dryRun, report); err != nil {
		return nil, err
	}

	tracked := map[string]bool{}         // key ids the mount owns
	trackedProjects := map[string]bool{} // per-lease projects the mount owns
	projectsByConfig := map[string]map[string]bool{}
	use := func(config, project string) {
		if projectsByConfig[config] == nil {
			projectsByConfig[config] = map[string]bool{}
		}
		if project != "" {
			projectsByConfig[config][project] = true
		}
	}
	var expired []*inventoryEntry
	err := walkInventory(ctx, s, func(e *inventoryEntry) error {
		tracked[e.KeyID] = true
		if e.ProjectPerLease {
			trackedProjects[e.ProjectID] = true
		}
		use(e.Config, e.ProjectID)
		if e.Kind == keyKindDynamic && !e.Expires.IsZero() && now.After(e.Expires.Add(expiredGrace)) {
			expired = append(expired, e)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := b.projectsOfRoles(ctx, s, use, tracked); err != nil {
		return nil, err
	}

	for _, e := range expired {
		if only != "" && e.Config != only {
			continue
		}
		report.Expired = append(report.Expired, e.KeyID)
		if dryRun {
			continue
		}
		if err := b.deleteExpired(ctx, s, e); err != nil {
			report.Errors = append(report.Errors, err.Error())
			continue
		}
		report.Deleted++
	}

	marker, err := b.mountMarker(ctx, s)
	if err != nil {
		return nil, err
	}
	configs := make([]string, 0, len(projectsByConfig))
	for config := range projectsByConfig {
		if only == "" || config == only {
			configs = append(configs, config)
		}
	}
	if only != "" && projectsByConfig[only] == nil {
		configs = append(configs, only)
	}
	sort.Strings(configs)
	for _, config := range configs {
		conn, err := b.connection(ctx, s, config)
		if err != nil || conn == nil || conn.climatiq == nil {
			report.Errors = append(report.Errors, fmt.Sprintf("config %q: not a usable climatiq connection", config))
			continue
		}
		b.tidyConnection(ctx, conn.climatiq, marker, cutoff, projectsByConfig[config], tracked, trackedProjects, dryRun, report)
	}

	b.observe(ctx, eventTidy, "dry_run", strconv.FormatBool(dryRun),
		"orphans", strconv.Itoa(len(report.Orphans)), "orphan_projects", strconv.Itoa(len(report.OrphanProjects)),
		"expired", strconv.Itoa(len(report.Expired)), "deleted", strconv.Itoa(report.Deleted),
		"wal_rolled_back", strconv.Itoa(report.WALRolledBack), "errors", strconv.Itoa(len(report.Errors)))
	return report, nil
}

// tidyWAL rolls back WAL entries older than the cutoff now, instead of
// waiting for the rollback manager.
func (b *backend) tidyWAL(ctx context.Context, s logical.Storage, cutoff time.Time, dryRun bool, report *tidyReport) error {
	ids, err := framework.ListWAL(ctx, s)
	if err != nil {
		return err
	}
	for _, id := range ids {
		entry, err := framework.GetWAL(ctx, s, id)
		if err != nil {
			return err
		}
		if entry == nil || time.Unix(entry.CreatedAt, 0).After(cutoff) || dryRun {
			continue
		}
		if err := b.walRollback(ctx, &logical.Request{Storage: s}, entry.Kind, entry.Data); err != nil {
			report.Errors = append(report.Errors, fmt.Sprintf("WAL entry %s: %s", id, err))
			continue
		}
		if err := framework.DeleteWAL(ctx, s, id); err != nil {
			return err
		}
		report.WALRolledBack++
	}
	return nil
}

// projectsOfRoles adds the projects of dynamic and static roles to the
// projects to scan, and static roles' keys to the tracked set.
func (b *backend) projectsOfRoles(ctx context.Context, s logical.Storage, use func(config, project string), tracked map[string]bool) error {
	names, err := s.List(ctx, roleStoragePrefix)
	if err != nil {
		return err
	}
	for _, name := range names {
		role, err := getRole(ctx, s, name)
		if err != nil {
			return err
		}
		if role != nil {
			use(role.Config, role.ProjectID)
		}
	}
	names, err = s.List(ctx, staticRoleStoragePrefix)
	if err != nil {
		return err
	}
	for _, name := range names {
		role, err := getStaticRole(ctx, s, name)
		if err != nil {
			return err
		}
		if role != nil {
			use(role.Config, role.ProjectID)
			tracked[role.KeyID] = true
			if role.PreviousKeyID != "" {
				tracked[role.PreviousKeyID] = true
			}
		}
	}
	return nil
}

// deleteExpired deletes a key whose lease must have ended without Vault
// revoking it (Vault died between the plugin's answer and storing the lease).
func (b *backend) deleteExpired(ctx context.Context, s logical.Storage, e *inventoryEntry) error {
	conn, err := b.climatiqConnection(ctx, s, e.Config)
	if err != nil {
		return err
	}
	if e.ProjectPerLease {
		err = ignoreNotFound(conn.climatiq.DeleteProject(ctx, e.ProjectID))
	} else {
		err = ignoreNotFound(conn.climatiq.DeleteKey(ctx, e.KeyID))
	}
	if err != nil {
		return fmt.Errorf("deleting expired key %s: %w", e.KeyID, err)
	}
	return deleteInventory(ctx, s, e.Kind, e.Role, e.KeyName)
}

// tidyConnection scans one connection's projects for marked keys that
// nothing tracks, and for marked per-lease projects that nothing tracks.
func (b *backend) tidyConnection(ctx context.Context, client *climatiq.Client, marker string, cutoff time.Time,
	projects, tracked, trackedProjects map[string]bool, dryRun bool, report *tidyReport) {
	ours := func(name string) bool {
		m, created, ok := parseKeyName(name)
		return ok && m == marker && created.Before(cutoff)
	}
	all, err := client.ListProjects(ctx)
	if err != nil {
		report.Errors = append(report.Errors, err.Error())
		return
	}
	scan := map[string]bool{}
	for id := range projects {
		scan[id] = true
	}
	for _, p := range all {
		if !ours(p.Name) {
			continue
		}
		if trackedProjects[p.ID] {
			scan[p.ID] = true
			continue
		}
		// An orphan project's keys go with it; they are not listed apart.
		report.OrphanProjects = append(report.OrphanProjects, p.ID)
		delete(scan, p.ID)
		if !dryRun {
			if err := ignoreNotFound(client.DeleteProject(ctx, p.ID)); err != nil {
				report.Errors = append(report.Errors, err.Error())
			} else {
				report.Deleted++
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
			report.Errors = append(report.Errors, err.Error())
			continue
		}
		for _, k := range keys {
			if tracked[k.ID] || !ours(k.Name) {
				continue
			}
			report.Orphans = append(report.Orphans, k.ID)
			if dryRun {
				continue
			}
			if err := ignoreNotFound(client.DeleteKey(ctx, k.ID)); err != nil {
				report.Errors = append(report.Errors, err.Error())
				continue
			}
			report.Deleted++
		}
	}
}

const pathTidyHelp = `
Finds upstream keys that carry this mount's marker (every key name the mount
creates starts with it) but that the mount no longer tracks, and reports them
(orphans, orphan_projects) or, unless dry_run=true, deletes them (deleted).
Keys younger than min_age are left alone, so issuance in flight is never raced;
keys without the marker are never touched.

Tidy also rolls back WAL entries older than min_age at once, and deletes keys
whose inventory entry outlived its lease's max_ttl by more than an hour
(expired): the sign of a Vault crash between the plugin's answer and the lease
being stored.
`

// periodicTidy runs tidy for connections with a tidy_interval, from the
// rollback manager's periodic call (about once a minute), on the node that
// may write.
func (b *backend) periodicTidy(ctx context.Context, req *logical.Request) error {
	if !b.WriteSafeReplicationState() {
		return nil
	}
	names, err := req.Storage.List(ctx, configStoragePrefix)
	if err != nil {
		return err
	}
	now := time.Now()
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
		if _, err := b.tidy(ctx, req.Storage, name, defaultTidyMinAge, false); err != nil {
			b.Logger().Warn("periodic tidy failed", "config", name, "error", err)
		}
	}
	return nil
}
