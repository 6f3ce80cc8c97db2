package carbon

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// tidyFixture builds a mount whose upstream holds every kind of key tidy
// must tell apart, and returns the ids by kind.
type tidyFixture struct {
	e                                   *testEnv
	issued, static, expired             string
	orphanOld, orphanYoung, foreign     string
	otherMount, walStranded, orphanProj string
}

func newTidyFixture(t *testing.T) *tidyFixture {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": "1h"})
	f := &tidyFixture{e: e}
	f.issued = e.mustOK(logical.ReadOperation, "creds/ci", nil).Data["key_id"].(string)
	f.static = e.staticRole("app").KeyID

	// A lease Vault never stored: its inventory entry outlived max_ttl.
	expired := e.mustOK(logical.ReadOperation, "creds/ci", nil)
	f.expired = expired.Data["key_id"].(string)
	inv, _ := getKey(context.Background(), e.storage, f.expired)
	if err := e.b.forgetKey(context.Background(), e.storage, inv); err != nil {
		t.Fatal(err)
	}
	inv.Expires = time.Now().Add(-2 * time.Hour)
	if err := e.b.recordKey(context.Background(), e.storage, inv, nil); err != nil {
		t.Fatal(err)
	}

	marker, _ := e.b.mountMarker(context.Background(), e.storage)
	old := time.Now().Add(-time.Hour).Unix()
	name := func(m string, created int64, nonce string) string {
		return fmt.Sprintf("vault-%s-%d-%s-x", m, created, nonce)
	}
	f.orphanOld = e.climatiq.AddKey(e.projectID, name(marker, old, "aaaaa1")).ID
	// Young for the default min_age, old enough for min_age=0: names
	// carry whole seconds, and a name of the current second is spared.
	f.orphanYoung = e.climatiq.AddKey(e.projectID, name(marker, time.Now().Add(-2*time.Second).Unix(), "aaaaa2")).ID
	f.foreign = e.climatiq.AddKey(e.projectID, "hand-made-key").ID
	f.otherMount = e.climatiq.AddKey(e.projectID, name("zzzzzzzz", old, "aaaaa3")).ID
	f.orphanProj = e.climatiq.AddProject(name(marker, old, "aaaaa4")).ID
	e.climatiq.AddKey(f.orphanProj, name(marker, old, "aaaaa4"))

	// A crash between the create and the inventory write: a WAL entry
	// covering a key nothing tracks. Its name is young, so only the WAL
	// rollback (not the marker scan) may delete it.
	stranded := e.climatiq.AddKey(e.projectID, name(marker, time.Now().Unix(), "aaaaa5"))
	f.walStranded = stranded.ID
	if _, err := framework.PutWAL(context.Background(), e.storage, walKindClimatiqKey,
		&ownedKey{Config: "cq", Role: "ci", ProjectID: e.projectID, KeyName: stranded.Name}); err != nil {
		t.Fatal(err)
	}
	// The issuances' block is retired once closed, off the request path;
	// wait for that so only the stranded entry is left.
	e.b.closeBlocks(context.Background(), "")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if ids, _ := framework.ListWAL(context.Background(), e.storage); len(ids) == 1 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("%d WAL entries, want only the stranded one", len(ids))
		}
	}
	return f
}

func TestTidy(t *testing.T) {
	tests := []struct {
		name           string
		data           map[string]any
		wantOrphans    func(f *tidyFixture) []string
		wantGone       func(f *tidyFixture) []string
		wantKept       func(f *tidyFixture) []string
		wantDeleted    int
		wantRolledBack int
		restarted      bool
	}{
		{
			name:        "dry run reports and deletes nothing",
			data:        map[string]any{"dry_run": true},
			wantOrphans: func(f *tidyFixture) []string { return []string{f.orphanOld} },
			wantKept: func(f *tidyFixture) []string {
				return []string{f.issued, f.static, f.expired, f.orphanOld, f.orphanYoung, f.foreign, f.otherMount, f.walStranded}
			},
		},
		{
			name:        "deletes orphans, expired keys and per-lease projects",
			data:        map[string]any{},
			wantOrphans: func(f *tidyFixture) []string { return []string{f.orphanOld} },
			wantGone:    func(f *tidyFixture) []string { return []string{f.orphanOld, f.expired} },
			wantKept: func(f *tidyFixture) []string {
				return []string{f.issued, f.static, f.orphanYoung, f.foreign, f.otherMount, f.walStranded}
			},
			wantDeleted: 3, // orphanOld, the expired key, the orphan project
		},
		{
			// A young WAL entry may cover an issuance in flight: its key is
			// spared whatever min_age, until walRollbackMinAge has passed.
			name:        "min_age 0 takes young orphans but not keys of issuances in flight",
			data:        map[string]any{"min_age": 0},
			wantOrphans: func(f *tidyFixture) []string { return []string{f.orphanOld, f.orphanYoung} },
			wantGone: func(f *tidyFixture) []string {
				return []string{f.orphanOld, f.orphanYoung, f.expired}
			},
			wantKept: func(f *tidyFixture) []string {
				return []string{f.issued, f.static, f.foreign, f.otherMount, f.walStranded}
			},
			wantDeleted: 4,
		},
		{
			// No issuance of an earlier plugin instance is in flight.
			name:        "after a restart, min_age 0 also rolls back the WAL",
			data:        map[string]any{"min_age": 0},
			restarted:   true,
			wantOrphans: func(f *tidyFixture) []string { return []string{f.orphanOld, f.orphanYoung} },
			wantGone: func(f *tidyFixture) []string {
				return []string{f.orphanOld, f.orphanYoung, f.expired, f.walStranded}
			},
			wantKept:       func(f *tidyFixture) []string { return []string{f.issued, f.static, f.foreign, f.otherMount} },
			wantDeleted:    4,
			wantRolledBack: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newTidyFixture(t)
			if tc.restarted {
				f.e.b.startedAt = time.Now().Add(2 * time.Second)
			}
			resp := f.e.mustOK(logical.UpdateOperation, "tidy", tc.data)
			orphans := resp.Data["orphans"].([]string)
			sort.Strings(orphans)
			want := tc.wantOrphans(f)
			sort.Strings(want)
			if !reflect.DeepEqual(orphans, want) {
				t.Fatalf("orphans = %v, want %v", orphans, want)
			}
			if projects := resp.Data["orphan_projects"].([]string); len(projects) != 1 || projects[0] != f.orphanProj {
				t.Fatalf("orphan_projects = %v, want [%s]", projects, f.orphanProj)
			}
			if expired := resp.Data["expired"].([]string); len(expired) != 1 || expired[0] != f.expired {
				t.Fatalf("expired = %v, want [%s]", expired, f.expired)
			}
			if resp.Data["deleted"] != tc.wantDeleted || resp.Data["wal_rolled_back"] != tc.wantRolledBack {
				t.Fatalf("deleted %v, rolled back %v; want %d, %d (errors %v)", resp.Data["deleted"], resp.Data["wal_rolled_back"], tc.wantDeleted, tc.wantRolledBack, resp.Data["errors"])
			}
			if tc.wantGone != nil {
				for _, id := range tc.wantGone(f) {
					if f.e.upstreamHas(id) {
						t.Errorf("key %s survived tidy", id)
					}
				}
			}
			for _, id := range tc.wantKept(f) {
				if !f.e.upstreamHas(id) {
					t.Errorf("tidy deleted key %s", id)
				}
			}
		})
	}
}

func TestTidyBadInput(t *testing.T) {
	e := newTestEnv(t)
	e.writeAltruistiqConfig("aq", nil)
	e.mustFail(logical.UpdateOperation, "tidy", map[string]any{"config": "aq"}, "config")
	e.mustFail(logical.UpdateOperation, "tidy", map[string]any{"config": "nope"}, "config")
	e.mustFail(logical.UpdateOperation, "tidy", map[string]any{"min_age": "-5s"}, "min_age")
}

// Tidy with min_age=0 spares a key named in the second tidy started in:
// names carry whole seconds, so such a key may be younger than tidy (an
// issuance whose record lands after tidy read the inventory).
func TestTidyMinAgeZeroSparesKeysOfTheCurrentSecond(t *testing.T) {
	e := newTestEnv(t)
	clock := newFakeClock()
	clock.now = time.Now().Truncate(time.Second).Add(50 * time.Millisecond)
	e.b.clock = clock.Now
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	marker, _ := e.b.mountMarker(context.Background(), e.storage)
	name, err := newKeyName(marker, clock.Now().Add(100*time.Millisecond), "ci")
	if err != nil {
		t.Fatal(err)
	}
	young := e.climatiq.AddKey(e.projectID, name).ID
	e.mustOK(logical.UpdateOperation, "tidy", map[string]any{"min_age": "0s"})
	if !e.upstreamHas(young) {
		t.Fatal("tidy with min_age=0 deleted a key named in its own second")
	}
	clock.Advance(2 * time.Second)
	e.mustOK(logical.UpdateOperation, "tidy", map[string]any{"min_age": "0s"})
	if e.upstreamHas(young) {
		t.Fatal("tidy kept an untracked key two seconds old with min_age=0")
	}
}

// TestTidyGoesOnInTheBackgroundAndIsolatesConnections: a run that outlasts
// the answer wait is answered at once with a 202 saying it runs; a slow
// connection does not hold up the others, whose outcome tidy-status shows
// while the slow one is still being scanned; a second tidy meanwhile is
// refused naming the running one; the run then ends on its own.
func TestTidyGoesOnInTheBackgroundAndIsolatesConnections(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	orphan := e.climatiq.AddKey(e.projectID, markedName(t, e, time.Now().Add(-time.Hour), "bbbbb1")).ID
	slowConnection(t, e, "cq-slow", 2*time.Second) // two calls: the project list, then the project's keys

	began := time.Now()
	started := startTidy(t, e, map[string]any{"min_age": "0s"})
	if took := time.Since(began); took > tidyAnswerWait+time.Second {
		t.Fatalf("the 202 came after %s, want it after the %s answer wait", took, tidyAnswerWait)
	}
	if started.Data["state"] != tidyRunning || started.Data["started"] == "" {
		t.Fatalf("the 202 says %v, want what was started, running", started.Data)
	}

	status := e.mustOK(logical.ReadOperation, "tidy-status", nil).Data
	conns := status["connections"].(map[string]any)
	healthy, slow := conns["cq"].(map[string]any), conns["cq-slow"].(map[string]any)
	if status["state"] != tidyRunning || healthy["state"] != tidyFinished || healthy["outcome"] != tidySucceeded || slow["state"] == tidyFinished {
		t.Fatalf("while the slow connection is scanned: run %v, cq %v/%v, cq-slow %v; want running, cq finished and succeeded, cq-slow not finished",
			status["state"], healthy["state"], healthy["outcome"], slow["state"])
	}
	if !reflect.DeepEqual(healthy["orphans"], []string{orphan}) || healthy["deleted"] != 1 || !reflect.DeepEqual(status["orphans"], []string{orphan}) {
		t.Fatalf("cq's findings while cq-slow runs: %v (run: %v), want orphan %s deleted", healthy, status["orphans"], orphan)
	}
	if _, ok := e.climatiq.Key(orphan); ok {
		t.Fatal("the healthy connection's orphan waits for the slow connection")
	}
	e.mustFail(logical.UpdateOperation, "tidy", nil, "is still running")

	e.b.waitTidy()
	status = e.mustOK(logical.ReadOperation, "tidy-status", nil).Data
	slow = status["connections"].(map[string]any)["cq-slow"].(map[string]any)
	if status["state"] != tidyFinished || status["finished"] == "" || slow["outcome"] != tidySucceeded || slow["projects_scanned"] != 1 {
		t.Fatalf("after the run: %v, cq-slow %v; want finished, cq-slow succeeded with its project scanned", status["state"], slow)
	}
}

// TestTidyConfigLimitsEveryStep: config= limits the WAL rollback too: a
// stale entry of another connection stays, with the key it covers. A dry
// run lists the entries it would roll back and changes nothing.
func TestTidyConfigLimitsEveryStep(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeClimatiqConfig("other", nil)
	stranded := map[string]string{} // config -> key id
	for i, config := range []string{"cq", "other"} {
		k := e.climatiq.AddKey(e.projectID, markedName(t, e, time.Now(), fmt.Sprintf("ccccc%d", i)))
		stranded[config] = k.ID
		if _, err := framework.PutWAL(context.Background(), e.storage, walKindClimatiqKey,
			&ownedKey{Config: config, Role: "ci", ProjectID: e.projectID, KeyName: k.Name}); err != nil {
			t.Fatal(err)
		}
	}
	e.b.startedAt = time.Now().Add(2 * time.Second) // the entries predate this instance: stale
	walEntries := func() int {
		ids, err := framework.ListWAL(context.Background(), e.storage)
		if err != nil {
			t.Fatal(err)
		}
		return len(ids)
	}

	dry := e.mustOK(logical.UpdateOperation, "tidy", map[string]any{"config": "cq", "dry_run": true}).Data
	listed, _ := dry["stale_wal"].([]map[string]any)
	if len(listed) != 1 || listed[0]["kind"] != walKindClimatiqKey || !strings.Contains(listed[0]["covers"].(string), "ccccc0") || dry["wal_rolled_back"] != 0 {
		t.Fatalf("dry run of cq lists stale WAL %v (rolled back %v), want cq's one entry, not rolled back", listed, dry["wal_rolled_back"])
	}
	if n := walEntries(); n != 2 {
		t.Fatalf("a dry run left %d WAL entries, want both", n)
	}

	done := e.mustOK(logical.UpdateOperation, "tidy", map[string]any{"config": "cq"}).Data
	if done["wal_rolled_back"] != 1 || walEntries() != 1 {
		t.Fatalf("tidy of cq rolled back %v, %d entries left; want cq's rolled back and other's kept", done["wal_rolled_back"], walEntries())
	}
	if _, ok := e.climatiq.Key(stranded["cq"]); ok {
		t.Fatal("cq's stranded key survived its rollback")
	}
	if _, ok := e.climatiq.Key(stranded["other"]); !ok {
		t.Fatal("tidy config=cq rolled back another connection's WAL entry")
	}
	if _, ok := done["connections"].(map[string]any)["other"]; ok {
		t.Fatalf("tidy config=cq reports on other: %v", done["connections"])
	}
}

// TestTidyStoppedMidwayReadsInterrupted: a run the plugin stops (a reload)
// is kept as interrupted, its unfinished connection cancelled, and the
// next instance shows it so.
func TestTidyStoppedMidwayReadsInterrupted(t *testing.T) {
	e := newTestEnv(t)
	slowConnection(t, e, "cq-slow", 20*time.Second)
	startTidy(t, e, map[string]any{"min_age": "0s"})
	began := time.Now()
	e.reload().clean(context.Background())
	if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("stopping the instance took %s: the run did not stop", took)
	}
	status := e.mustOK(logical.ReadOperation, "tidy-status", nil).Data
	slow := status["connections"].(map[string]any)["cq-slow"].(map[string]any)
	if status["state"] != tidyInterrupted || slow["outcome"] != tidyCancelled {
		t.Fatalf("after a stop midway: run %v, cq-slow %v; want interrupted and cancelled", status["state"], slow["outcome"])
	}
}
