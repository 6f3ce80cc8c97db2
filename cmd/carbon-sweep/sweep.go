package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/keyname"
)

// run is the whole command, with its surroundings passed in for tests.
func run(ctx context.Context, args []string, env func(string) string, stdin io.Reader, stdout, stderr io.Writer, now time.Time) int {
	o, err := parseArgs(args, env, stdout, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		return 2
	}
	client, err := climatiq.New(climatiq.Options{
		ManagementURL: o.managementURL,
		// The regular API is never called; the client wants a valid base.
		APIURL:        climatiq.DefaultAPIURL,
		ManagementKey: o.managementKey,
		Timeout:       o.requestTimeout,
		MaxRetries:    o.maxRetries,
		RateLimit:     o.rateLimit,
	})
	if err != nil {
		fmt.Fprintln(stderr, "carbon-sweep:", err)
		return 2
	}
	defer client.Close()

	inv, err := collect(ctx, client)
	if err != nil {
		fmt.Fprintln(stderr, "carbon-sweep:", err)
		return 1
	}
	inv.printSummary(stdout, o.managementURL, now)
	failed := len(inv.errs) > 0
	for _, e := range inv.errs {
		fmt.Fprintln(stderr, "carbon-sweep:", e)
	}
	if o.marker == "" {
		return exitCode(failed)
	}

	cutoff := now.Add(-o.olderThan)
	if o.narrowed() && !o.olderThanSet {
		cutoff = now.Add(time.Second) // narrowed by a filter alone: every age
	}
	p := inv.plan(o, cutoff)
	p.print(stdout, o, cutoff, now)
	if p.empty() {
		return exitCode(failed)
	}
	if !o.delete {
		fmt.Fprintln(stdout, "\nDry run: nothing was deleted. Add -delete to delete the above.")
		return exitCode(failed)
	}
	if !o.yes && !confirm(stdin, stdout, o.marker, p) {
		fmt.Fprintln(stderr, "carbon-sweep: not confirmed; nothing was deleted")
		return 1
	}
	if !p.execute(ctx, client, stdout, stderr) {
		failed = true
	}
	return exitCode(failed)
}

func exitCode(failed bool) int {
	if failed {
		return 1
	}
	return 0
}

// entry is a marked key or per-lease project.
type entry struct {
	kind      string // "key" or "project"
	id, name  string
	projectID string // of a key
	marker    string
	created   time.Time
}

// inventory is what the management key sees.
type inventory struct {
	projects, keys, unmarked int
	entries                  []entry
	// keysOf holds every project's keys; a project missing from it could
	// not be listed and is never deleted whole.
	keysOf map[string][]climatiq.APIKey
	errs   []error
}

// collect lists every project and its keys. A project that cannot be
// listed is reported and skipped; a failed project listing fails it all.
func collect(ctx context.Context, client *climatiq.Client) (*inventory, error) {
	projects, err := client.ListProjects(ctx)
	if err != nil {
		return nil, err
	}
	inv := &inventory{projects: len(projects), keysOf: map[string][]climatiq.APIKey{}}
	for _, p := range projects {
		if marker, created, ok := keyname.Parse(p.Name); ok {
			inv.entries = append(inv.entries, entry{kind: "project", id: p.ID, name: p.Name, marker: marker, created: created})
		}
		keys, err := client.ListKeys(ctx, p.ID)
		if errors.Is(err, climatiq.ErrNotFound) {
			continue // deleted since the project list: nothing left to sweep
		}
		if err != nil {
			inv.errs = append(inv.errs, fmt.Errorf("project %s: %w", p.ID, err))
			continue
		}
		inv.keysOf[p.ID] = keys
		for _, k := range keys {
			inv.keys++
			marker, created, ok := keyname.Parse(k.Name)
			if !ok {
				inv.unmarked++
				continue
			}
			inv.entries = append(inv.entries, entry{kind: "key", id: k.ID, name: k.Name, projectID: p.ID, marker: marker, created: created})
		}
	}
	return inv, nil
}

type markerStats struct {
	marker         string
	keys, projects int
	oldest, newest time.Time
}

func (inv *inventory) printSummary(w io.Writer, url string, now time.Time) {
	byMarker := map[string]*markerStats{}
	for _, e := range inv.entries {
		s := byMarker[e.marker]
		if s == nil {
			s = &markerStats{marker: e.marker, oldest: e.created, newest: e.created}
			byMarker[e.marker] = s
		}
		if e.kind == "key" {
			s.keys++
		} else {
			s.projects++
		}
		if e.created.Before(s.oldest) {
			s.oldest = e.created
		}
		if e.created.After(s.newest) {
			s.newest = e.created
		}
	}
	stats := make([]*markerStats, 0, len(byMarker))
	for _, s := range byMarker {
		stats = append(stats, s)
	}
	sort.Slice(stats, func(i, j int) bool { return stats[i].marker < stats[j].marker })

	fmt.Fprintf(w, "%s: %d projects, %d keys (%d without a Vault marker, never touched)\n\n", url, inv.projects, inv.keys, inv.unmarked)
	if len(stats) == 0 {
		fmt.Fprintln(w, "No key or project carries a Vault marker.")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MARKER\tKEYS\tPROJECTS\tOLDEST\tNEWEST")
	for _, s := range stats {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\n", s.marker, s.keys, s.projects, when(s.oldest, now), when(s.newest, now))
	}
	_ = tw.Flush()
}

// plan is what a sweep of one marker deletes: whole per-lease projects
// (their keys go with them) and single keys elsewhere.
type plan struct {
	projects []entry
	keys     []entry
	// kept explains marked projects that are old enough but not deleted
	// whole, because they hold a key the sweep must not delete.
	kept []string
}

func (p plan) empty() bool { return len(p.projects) == 0 && len(p.keys) == 0 }

func (inv *inventory) plan(o options, cutoff time.Time) plan {
	var p plan
	marker := o.marker
	whole := map[string]bool{}
	for _, e := range inv.entries {
		if e.kind != "project" || e.marker != marker || !e.created.Before(cutoff) || !o.selects(e) {
			continue
		}
		keys, listed := inv.keysOf[e.id]
		if !listed {
			p.kept = append(p.kept, fmt.Sprintf("project %s (%s): its keys could not be listed", e.id, e.name))
			continue
		}
		// Deleting a project deletes all its keys: only when each is this
		// marker's and past the cut-off, as in a per-lease project.
		if reason := foreignKey(keys, marker, cutoff); reason != "" {
			p.kept = append(p.kept, fmt.Sprintf("project %s (%s): %s; its old keys of %s are deleted one by one", e.id, e.name, reason, marker))
			continue
		}
		whole[e.id] = true
		p.projects = append(p.projects, e)
	}
	for _, e := range inv.entries {
		if e.kind == "key" && e.marker == marker && e.created.Before(cutoff) && !whole[e.projectID] && o.selects(e) {
			p.keys = append(p.keys, e)
		}
	}
	sortEntries(p.projects)
	sortEntries(p.keys)
	return p
}

// foreignKey says why a project's keys rule out deleting it whole, or "".
func foreignKey(keys []climatiq.APIKey, marker string, cutoff time.Time) string {
	for _, k := range keys {
		m, created, ok := keyname.Parse(k.Name)
		switch {
		case !ok:
			return fmt.Sprintf("it holds key %s without a Vault marker", k.ID)
		case m != marker:
			return fmt.Sprintf("it holds key %s of marker %s", k.ID, m)
		case !created.Before(cutoff):
			return fmt.Sprintf("it holds key %s newer than the cut-off", k.ID)
		}
	}
	return ""
}

func sortEntries(es []entry) {
	sort.Slice(es, func(i, j int) bool {
		if !es[i].created.Equal(es[j].created) {
			return es[i].created.Before(es[j].created)
		}
		return es[i].id < es[j].id
	})
}

func (p plan) print(w io.Writer, o options, cutoff, now time.Time) {
	if o.narrowed() {
		fmt.Fprintf(w, "\nMarker %s, narrowed to %s: %d keys, %d per-lease projects\n", o.marker, o.filters(), len(p.keys), len(p.projects))
	} else {
		fmt.Fprintf(w, "\nMarker %s, created before %s (older than %s): %d keys, %d per-lease projects\n",
			o.marker, cutoff.UTC().Format(time.RFC3339), age(o.olderThan), len(p.keys), len(p.projects))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, e := range p.projects {
		fmt.Fprintf(tw, "  project\t%s\t%s\t%s\twith its keys\n", e.id, e.name, when(e.created, now))
	}
	for _, e := range p.keys {
		fmt.Fprintf(tw, "  key\t%s\t%s\t%s\tin project %s\n", e.id, e.name, when(e.created, now), e.projectID)
	}
	_ = tw.Flush()
	for _, k := range p.kept {
		fmt.Fprintln(w, "  not deleted whole:", k)
	}
}

// confirm asks the operator to type the marker.
func confirm(stdin io.Reader, w io.Writer, marker string, p plan) bool {
	fmt.Fprintf(w, "\nDelete %d keys and %d projects upstream? This cannot be undone.\nType the marker (%s) to confirm: ", len(p.keys), len(p.projects), marker)
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && line == "" {
		fmt.Fprintln(w)
		return false
	}
	return strings.TrimSpace(line) == marker
}

// execute deletes the plan, projects first (their keys go with them), and
// reports each outcome. It returns false when a delete failed.
func (p plan) execute(ctx context.Context, client *climatiq.Client, w, stderr io.Writer) bool {
	fmt.Fprintln(w)
	deleted, gone, failed := 0, 0, 0
	outcome := func(what string, e entry, err error) {
		switch {
		case err == nil:
			deleted++
			fmt.Fprintf(w, "deleted %s %s (%s)\n", what, e.id, e.name)
		case errors.Is(err, climatiq.ErrNotFound):
			gone++
			fmt.Fprintf(w, "already gone: %s %s (%s)\n", what, e.id, e.name)
		default:
			failed++
			fmt.Fprintf(stderr, "carbon-sweep: %s %s (%s) not deleted: %v\n", what, e.id, e.name, err)
		}
	}
	for _, e := range p.projects {
		outcome("project", e, client.DeleteProject(ctx, e.id))
	}
	for _, e := range p.keys {
		outcome("key", e, client.DeleteProjectKey(ctx, e.projectID, e.id))
	}
	fmt.Fprintf(w, "\nDeleted %d, already gone %d, failed %d.\n", deleted, gone, failed)
	return failed == 0
}

// when shows a creation time and its age.
func when(t, now time.Time) string {
	at := t.UTC().Format("2006-01-02 15:04 UTC")
	if t.After(now) {
		// A clock ahead of ours, or a name made by hand.
		return fmt.Sprintf("%s (in %s)", at, age(t.Sub(now)))
	}
	return fmt.Sprintf("%s (%s ago)", at, age(now.Sub(t)))
}

// age rounds a duration to its two largest units, as people read ages.
func age(d time.Duration) string {
	days := int(d / (24 * time.Hour))
	hours := int(d % (24 * time.Hour) / time.Hour)
	minutes := int(d % time.Hour / time.Minute)
	switch {
	case days > 0:
		return fmt.Sprintf("%dd%dh", days, hours)
	case hours > 0:
		return fmt.Sprintf("%dh%dm", hours, minutes)
	case minutes > 0:
		return fmt.Sprintf("%dm", minutes)
	}
	return fmt.Sprintf("%ds", int(d/time.Second))
}
