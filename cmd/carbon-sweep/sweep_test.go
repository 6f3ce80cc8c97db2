package main

import (
	"bytes"
	"context"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiqtest"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/keyname"
)

const (
	testKey  = "sweep-management-key"
	markerA  = "aaaa1111"
	markerB  = "bbbb2222"
	tenDays  = 10 * 24 * time.Hour
	oneHour  = time.Hour
	tenthDay = "7d"
)

var now = time.Unix(1795000000, 0)

// fixture is an account with keys of two markers, keys without one, and
// per-lease projects, each labelled for the assertions.
type fixture struct {
	fake     *climatiqtest.Server
	keys     map[string]string // label -> key id
	projects map[string]string // label -> project id
	names    map[string]string // label -> key name
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{fake: climatiqtest.NewServer(testKey), keys: map[string]string{}, projects: map[string]string{}, names: map[string]string{}}
	t.Cleanup(f.fake.Close)
	nonce := 0
	name := func(marker string, age time.Duration, rest string) string {
		nonce++
		n, err := keyname.Format(marker, now.Add(-age), strings.Repeat("n", 5)+string(rune('a'+nonce)), rest)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	project := func(label, name string) string {
		id := f.fake.AddProject(name).ID
		f.projects[label] = id
		return id
	}
	key := func(label, projectID, name string) {
		f.keys[label], f.names[label] = f.fake.AddKey(projectID, name).ID, name
	}

	prod := project("prod", "production")
	key("A-old-1", prod, name(markerA, tenDays, "ci-deploy"))
	key("A-old-2", prod, name(markerA, 8*24*time.Hour, "app"))
	key("A-new", prod, name(markerA, oneHour, "ci-deploy"))
	key("B-old-1", prod, name(markerB, tenDays, "ci"))
	key("B-old-2", prod, name(markerB, tenDays, "ci"))
	key("hand-made", prod, "ci-key")
	key("look-alike", prod, "vault-aaaa1111-0795000000-nnnnnz-x") // leading zero: not ours

	lease := project("A-lease-old", name(markerA, tenDays, "lease"))
	key("A-lease-old-key", lease, name(markerA, tenDays, "lease"))
	project("A-lease-empty", name(markerA, tenDays, "lease")) // its key's create failed
	mixed := project("A-lease-mixed", name(markerA, tenDays, "lease"))
	key("A-mixed-key", mixed, name(markerA, tenDays, "lease"))
	key("mixed-hand-made", mixed, "added-by-hand")
	young := project("A-lease-young", name(markerA, oneHour, "lease"))
	key("A-lease-young-key", young, name(markerA, oneHour, "lease"))
	bLease := project("B-lease-old", name(markerB, tenDays, "lease"))
	key("B-lease-old-key", bLease, name(markerB, tenDays, "lease"))
	return f
}

// gone lists the labels of keys and projects no longer upstream.
func (f *fixture) gone() (keys, projects []string) {
	live := map[string]bool{}
	for _, k := range f.fake.Keys() {
		live[k.ID] = true
	}
	for _, p := range f.fake.Projects() {
		live[p.ID] = true
	}
	for label, id := range f.keys {
		if !live[id] {
			keys = append(keys, label)
		}
	}
	for label, id := range f.projects {
		if !live[id] {
			projects = append(projects, label)
		}
	}
	sort.Strings(keys)
	sort.Strings(projects)
	return keys, projects
}

func (f *fixture) run(t *testing.T, stdin string, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	if env == nil {
		env = map[string]string{envManagementKey: testKey}
	}
	args = append([]string{"-management-url", f.fake.ManagementURL()}, args...)
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code := run(ctx, args, func(k string) string { return env[k] }, strings.NewReader(stdin), &stdout, &stderr, now)
	return code, stdout.String(), stderr.String()
}

// The keys (alone or with their project) a sweep of marker A older than
// seven days deletes: nothing of marker B, nothing unmarked, nothing
// younger, and no project holding a key it must keep.
var (
	sweptKeys     = []string{"A-lease-old-key", "A-mixed-key", "A-old-1", "A-old-2"}
	sweptProjects = []string{"A-lease-empty", "A-lease-old"}
)

func TestSweep(t *testing.T) {
	tests := []struct {
		name         string
		args         []string
		stdin        string
		wantCode     int
		wantKeys     []string // labels gone afterwards
		wantProjects []string
		wantOut      []string
		wantErr      []string
	}{
		{
			name:     "summary only",
			wantCode: 0,
			wantOut: []string{
				"6 projects, 12 keys (3 without a Vault marker, never touched)",
				"aaaa1111  6     4         2026-11-08 11:06 UTC (10d0h ago)  2026-11-18 10:06 UTC (1h0m ago)",
				"bbbb2222  3     1         2026-11-08 11:06 UTC (10d0h ago)  2026-11-08 11:06 UTC (10d0h ago)",
			},
		},
		{
			name:     "dry run deletes nothing",
			args:     []string{"-marker", markerA, "-older-than", tenthDay},
			wantCode: 0,
			wantOut: []string{
				"Marker aaaa1111, created before 2026-11-11T11:06:40Z (older than 7d0h): 3 keys, 2 per-lease projects",
				"Dry run: nothing was deleted.",
				"holds key", "without a Vault marker",
			},
		},
		{
			name:         "delete with -yes",
			args:         []string{"-marker", markerA, "-older-than", tenthDay, "-delete", "-yes"},
			wantCode:     0,
			wantKeys:     sweptKeys,
			wantProjects: sweptProjects,
			wantOut:      []string{"Deleted 5, already gone 0, failed 0."},
		},
		{
			name:         "delete confirmed by typing the marker",
			args:         []string{"-marker", markerA, "-older-than", tenthDay, "-delete"},
			stdin:        markerA + "\n",
			wantCode:     0,
			wantKeys:     sweptKeys,
			wantProjects: sweptProjects,
			wantOut:      []string{"Type the marker (aaaa1111) to confirm:", "Deleted 5"},
		},
		{
			name:     "delete not confirmed",
			args:     []string{"-marker", markerA, "-older-than", tenthDay, "-delete"},
			stdin:    "yes\n",
			wantCode: 1,
			wantErr:  []string{"not confirmed; nothing was deleted"},
		},
		{
			name:     "delete with no answer at all",
			args:     []string{"-marker", markerA, "-older-than", tenthDay, "-delete"},
			wantCode: 1,
			wantErr:  []string{"not confirmed"},
		},
		{
			name:         "a shorter cut-off takes the younger ones too",
			args:         []string{"-marker", markerA, "-older-than", "30m", "-delete", "-yes"},
			wantCode:     0,
			wantKeys:     []string{"A-lease-old-key", "A-lease-young-key", "A-mixed-key", "A-new", "A-old-1", "A-old-2"},
			wantProjects: []string{"A-lease-empty", "A-lease-old", "A-lease-young"},
		},
		{
			name:         "the other marker",
			args:         []string{"-marker", markerB, "-older-than", tenthDay, "-delete", "-yes"},
			wantCode:     0,
			wantKeys:     []string{"B-lease-old-key", "B-old-1", "B-old-2"},
			wantProjects: []string{"B-lease-old"},
		},
		{
			name:     "a marker with nothing to delete",
			args:     []string{"-marker", "cccc3333", "-older-than", tenthDay, "-delete", "-yes"},
			wantCode: 0,
			wantOut:  []string{"0 keys, 0 per-lease projects"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			code, out, errOut := f.run(t, tc.stdin, nil, tc.args...)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.wantCode, out, errOut)
			}
			keys, projects := f.gone()
			if !slices.Equal(keys, tc.wantKeys) || !slices.Equal(projects, tc.wantProjects) {
				t.Fatalf("gone: keys %v projects %v; want keys %v projects %v\n%s", keys, projects, tc.wantKeys, tc.wantProjects, out)
			}
			for _, want := range tc.wantOut {
				if !strings.Contains(out, want) {
					t.Errorf("stdout lacks %q:\n%s", want, out)
				}
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(errOut, want) {
					t.Errorf("stderr lacks %q:\n%s", want, errOut)
				}
			}
			for _, k := range f.fake.Keys() {
				if strings.Contains(out+errOut, k.Key) {
					t.Fatalf("output shows a key value")
				}
			}
		})
	}
}

// TestSweepNarrowedToWhatAWALEntryCovers: the filters the plugin prints
// for an abandoned rollback take exactly the names the entry covers, of
// the marker given, and spare the names -keep gives; -older-than is then
// optional.
func TestSweepNarrowedToWhatAWALEntryCovers(t *testing.T) {
	tenDaysAgo := now.Add(-tenDays).UTC()
	window := []string{"-created-from", tenDaysAgo.Format(time.RFC3339), "-created-until", tenDaysAgo.Format(time.RFC3339)}
	tests := []struct {
		name         string
		args         func(f *fixture) []string
		wantKeys     []string
		wantProjects []string
	}{
		{
			name:     "exact names",
			args:     func(f *fixture) []string { return []string{"-name", f.names["A-old-2"], "-name", f.names["A-new"]} },
			wantKeys: []string{"A-new", "A-old-2"},
		},
		{
			name: "a block: nonce prefix and time window",
			args: func(*fixture) []string { return append([]string{"-nonce-prefix", "nnnnn"}, window...) },
			// Every ten-day-old name of marker A; the mixed project holds a
			// hand-made key, so only its marked key goes.
			wantKeys:     []string{"A-lease-old-key", "A-mixed-key", "A-old-1"},
			wantProjects: []string{"A-lease-empty", "A-lease-old"},
		},
		{
			name: "a block, keeping what the mount holds",
			args: func(f *fixture) []string {
				return append([]string{"-nonce-prefix", "nnnnn", "-keep", f.names["A-old-1"]}, window...)
			},
			wantKeys:     []string{"A-lease-old-key", "A-mixed-key"},
			wantProjects: []string{"A-lease-empty", "A-lease-old"},
		},
		{
			name: "a nonce prefix no name has",
			args: func(*fixture) []string { return append([]string{"-nonce-prefix", "zz"}, window...) },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			args := append([]string{"-marker", markerA, "-delete", "-yes"}, tc.args(f)...)
			code, out, errOut := f.run(t, "", nil, args...)
			if code != 0 || !strings.Contains(out, "narrowed to") {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
			}
			keys, projects := f.gone()
			if !slices.Equal(keys, tc.wantKeys) || !slices.Equal(projects, tc.wantProjects) {
				t.Fatalf("gone: keys %v projects %v; want keys %v projects %v\n%s", keys, projects, tc.wantKeys, tc.wantProjects, out)
			}
		})
	}
}

func TestSweepUsage(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{"no management key", nil, map[string]string{}, "set CLIMATIQ_MANAGEMENT_KEY"},
		{"argument", []string{"extra"}, nil, `unexpected argument "extra"`},
		{"unknown flag", []string{"-management-key", "x"}, nil, "flag provided but not defined"},
		{"bad marker", []string{"-marker", "AAAA1111"}, nil, "is not a mount marker"},
		{"delete without marker", []string{"-delete", "-older-than", "7d"}, nil, "-delete needs -marker and -older-than"},
		{"delete without cut-off", []string{"-delete", "-marker", markerA}, nil, "-delete needs -marker and -older-than"},
		{"yes without delete", []string{"-yes", "-marker", markerA, "-older-than", "1h"}, nil, "-yes only applies with -delete"},
		{"cut-off without marker", []string{"-older-than", "1h"}, nil, "-older-than needs -marker"},
		{"filter without marker", []string{"-nonce-prefix", "abc"}, nil, "need -marker"},
		{"bad time", []string{"-marker", markerA, "-created-from", "yesterday"}, nil, "not an RFC 3339 time"},
		{"bad age", []string{"-marker", markerA, "-older-than", "a week"}, nil, "not a duration"},
		{"negative age", []string{"-marker", markerA, "-older-than", "-1d"}, nil, "whole number of days"},
		{"negative rate", []string{"-rate-limit", "-1"}, nil, "-rate-limit must not be negative"},
		{"zero timeout", []string{"-request-timeout", "0s"}, nil, "-request-timeout must be positive"},
		{"too many retries", []string{"-max-retries", "11"}, nil, "-max-retries must be between 0 and 10"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			before := f.fake.Stats().Requests
			code, _, errOut := f.run(t, "", tc.env, tc.args...)
			if code != 2 || !strings.Contains(errOut, tc.wantErr) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", code, errOut, tc.wantErr)
			}
			if f.fake.Stats().Requests != before {
				t.Fatal("a usage error reached the upstream")
			}
		})
	}
}

func TestCheckURL(t *testing.T) {
	tests := []struct {
		url     string
		wantErr string
	}{
		{"https://preview.api.climatiq.io/management/v1-preview1", ""},
		{"http://127.0.0.1:8200/management/v1-preview1", ""},
		{"http://127.5.0.1/x", ""},
		{"http://[::1]:80/x", ""},
		{"http://localhost/x", ""},
		{"http://example.com/x", "only for loopback hosts"},
		{"http://10.0.0.1/x", "only for loopback hosts"},
		{"https://user:pw@example.com/x", "must not carry credentials"},
		{"https://example.com/x?a=1", "query or fragment"},
		{"ftp://example.com/x", "scheme"},
		{"example.com/x", "not an absolute URL"},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			err := checkURL(tc.url)
			if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("checkURL(%q) = %v, want %q", tc.url, err, tc.wantErr)
			}
		})
	}
}

func TestParseAge(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"7d", 7 * 24 * time.Hour, false},
		{"0d", 0, false},
		{"36h", 36 * time.Hour, false},
		{"90m", 90 * time.Minute, false},
		{"1.5d", 0, true},
		{"-1h", 0, true},
		{"d", 0, true},
		{"", 0, true},
	}
	for _, tc := range tests {
		got, err := parseAge(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseAge(%q) = %v, %v; want %v (error: %v)", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

// Upstream failures: retried as the plugin retries them, and reported
// with exit 1 when the retries run out.
func TestSweepUpstreamFaults(t *testing.T) {
	deleteB := []string{"-marker", markerB, "-older-than", tenthDay, "-delete", "-yes"}
	noRetries := append([]string{"-max-retries", "0"}, deleteB...)
	allOfB := []string{"B-lease-old", "B-lease-old-key", "B-old-1", "B-old-2"}
	tests := []struct {
		name     string
		fault    func(*climatiqtest.Server)
		env      map[string]string
		args     []string
		wantCode int
		wantGone []string // labels of keys and projects gone afterwards
		wantErr  string
	}{
		{"a 503 is retried", func(s *climatiqtest.Server) { s.FailNextMethod(http.MethodDelete, 1, http.StatusServiceUnavailable) }, nil, deleteB, 0, allOfB, ""},
		{"a 429 is waited out, not counted as a retry", func(s *climatiqtest.Server) { s.FailNextMethod(http.MethodDelete, 1, http.StatusTooManyRequests) }, nil, noRetries, 0, allOfB, ""},
		// The project is deleted first and fails; the sweep goes on with the keys.
		{"retries run out", func(s *climatiqtest.Server) { s.FailNextMethod(http.MethodDelete, 1, http.StatusBadGateway) }, nil, noRetries, 1, []string{"B-old-1", "B-old-2"}, "502 Bad Gateway"},
		{"wrong management key", func(*climatiqtest.Server) {}, map[string]string{envManagementKey: "wrong"}, deleteB, 1, nil, "401 Unauthorized"},
		{"the project list fails", func(s *climatiqtest.Server) { s.FailNextMethod(http.MethodGet, 1, http.StatusForbidden) }, nil, deleteB, 1, nil, "403 Forbidden"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			tc.fault(f.fake)
			code, out, errOut := f.run(t, "", tc.env, tc.args...)
			if code != tc.wantCode || !strings.Contains(errOut, tc.wantErr) {
				t.Fatalf("exit %d, want %d with %q\nstdout:\n%s\nstderr:\n%s", code, tc.wantCode, tc.wantErr, out, errOut)
			}
			keys, projects := f.gone()
			gone := append(keys, projects...)
			sort.Strings(gone)
			if !slices.Equal(gone, tc.wantGone) {
				t.Fatalf("gone %v, want %v\n%s", gone, tc.wantGone, out)
			}
			if strings.Contains(out+errOut, testKey) {
				t.Fatal("output shows the management key")
			}
		})
	}
}
